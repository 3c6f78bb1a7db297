package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/quicnet"
)

// clusterTB is what startCluster needs of a test; examples pass their own.
type clusterTB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// testCluster is real lockd nodes (internal/localcluster) on 127.0.0.1 in
// this process, with a throw-away CA.
type testCluster struct {
	t     clusterTB
	lc    *localcluster.Cluster
	ca    *pki.CA
	addrs []string
}

func testLogger() *slog.Logger {
	if os.Getenv("LOCKD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startCluster starts n nodes with groups groups and stops them when the
// test ends.
func startCluster(t clusterTB, n, groups int) *testCluster {
	t.Helper()
	return startClusterWith(t, n, groups, false)
}

// startClusterWith is startCluster, with a quicnet.FaultConn under every
// node when faults is set (see cutter).
func startClusterWith(t clusterTB, n, groups int, faults bool) *testCluster {
	t.Helper()
	return startClusterTuned(t, n, groups, faults, nil)
}

// startClusterTuned is startClusterWith, with tune (when set) applied to
// every node's configuration last.
func startClusterTuned(t clusterTB, n, groups int, faults bool, tune func(*server.Config)) *testCluster {
	t.Helper()
	lc, err := localcluster.Start(localcluster.Options{Nodes: n, Groups: groups, Lease: time.Second, Dir: t.TempDir(),
		Logger: testLogger(), Faults: faults, Tune: func(c *server.Config) {
			c.ExpiryInterval = 20 * time.Millisecond
			if tune != nil {
				tune(c)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	return &testCluster{t: t, lc: lc, ca: lc.CA(), addrs: lc.Endpoints()}
}

// stop stops node i at once, as a crash looks to the others.
func (tc *testCluster) stop(i int) {
	tc.t.Helper()
	if err := tc.lc.Stop(i); err != nil {
		tc.t.Fatalf("stop node %d: %v", i+1, err)
	}
}

// config returns a client Config with a fresh client certificate.
func (tc *testCluster) config() Config {
	tc.t.Helper()
	return tc.configAs("client-test")
}

// configAs returns a client Config with a fresh certificate for identity
// name.
func (tc *testCluster) configAs(name string) Config {
	tc.t.Helper()
	certPEM, keyPEM, err := tc.ca.IssueClient(name)
	if err != nil {
		tc.t.Fatal(err)
	}
	tlsConf, err := pki.ClientTLSConfig(tc.ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		tc.t.Fatal(err)
	}
	return Config{Endpoints: tc.addrs, TLS: tlsConf, Logger: testLogger()}
}

// client connects a Client and closes it when the test ends.
func (tc *testCluster) client() *Client {
	tc.t.Helper()
	return tc.clientAs("client-test")
}

// clientAs connects a Client as identity name and closes it when the test
// ends.
func (tc *testCluster) clientAs(name string) *Client {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := New(ctx, tc.configAs(name))
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { c.Close() })
	return c
}

// cutter cuts one client off the network: every packet between it and
// every node is dropped, by the nodes' fault-injecting sockets (the
// cluster must run with faults), and its dials after the cut never
// connect. The client's QUIC uses a socket of its own per connection, so
// the cutter learns each one's port from the client's dial.
type cutter struct {
	tc *testCluster

	mu    sync.Mutex // guards the fields below
	ports []int
	cut   bool
}

// cuttableClient connects a Client whose network the returned cutter cuts.
func (tc *testCluster) cuttableClient() (*Client, *cutter) {
	tc.t.Helper()
	k := &cutter{tc: tc}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := newWith(ctx, tc.config(), func(c *Client) { c.dial = k.dial })
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { c.Close() })
	return c, k
}

func (k *cutter) dial(ctx context.Context, addr string, tlsConf *tls.Config) (*quicnet.Conn, error) {
	k.mu.Lock()
	cut := k.cut
	k.mu.Unlock()
	if cut { // nothing answers: the handshake times out
		<-ctx.Done()
		return nil, fmt.Errorf("dial %s: cut off the network: %w", addr, ctx.Err())
	}
	qc, err := quicnet.Dial(ctx, addr, tlsConf)
	if err != nil {
		return nil, err
	}
	port := qc.LocalAddr().(*net.UDPAddr).Port
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ports = append(k.ports, port)
	if k.cut {
		k.block(port)
	}
	return qc, nil
}

// cutNow drops every packet to and from the client from now on.
func (k *cutter) cutNow() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cut = true
	for _, p := range k.ports {
		k.block(p)
	}
}

func (k *cutter) block(port int) {
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	for i := 0; i < k.tc.lc.N(); i++ {
		if f := k.tc.lc.Fault(i); f != nil {
			if err := f.Partition(addr, quicnet.Both); err != nil {
				panic(err)
			}
		}
	}
}
