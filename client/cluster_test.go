package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
)

// clusterTB is what startCluster needs of a test; examples pass their own.
type clusterTB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// testCluster is real lockd nodes (internal/server) on 127.0.0.1 in this
// process, with a throw-away CA in t.TempDir().
type testCluster struct {
	t     clusterTB
	ca    *pki.CA
	addrs []string
	nodes []*testNode
}

type testNode struct {
	cfg    server.Config
	pc     net.PacketConn
	cancel context.CancelFunc
	done   chan error
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
	ca, err := pki.NewCA("lockd client test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{t: t, ca: ca}
	peers := map[paxos.NodeID]string{}
	pcs := make([]net.PacketConn, n)
	for i := range pcs {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pcs[i] = pc
		peers[paxos.NodeID(i+1)] = pc.LocalAddr().String()
		tc.addrs = append(tc.addrs, pc.LocalAddr().String())
	}
	dir := t.TempDir()
	for i := range pcs {
		id := paxos.NodeID(i + 1)
		certPEM, keyPEM, err := ca.IssueNode(strconv.Itoa(int(id)), nil)
		if err != nil {
			t.Fatal(err)
		}
		tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		node := &testNode{cfg: server.Config{ID: id, Peers: peers, Groups: groups, DataDir: filepath.Join(dir, fmt.Sprintf("node%d", id)),
			TLS: tlsConf, Lease: time.Second, ExpiryInterval: 20 * time.Millisecond, Logger: testLogger().With("node", id)}}
		tc.nodes = append(tc.nodes, node)
	}
	// Make every node before running any: a node's endpoint listens from
	// within server.New, and a peer message arriving before New has
	// finished races with it (a server bug, reported).
	servers := make([]*server.Server, n)
	for i, node := range tc.nodes {
		cfg := node.cfg
		cfg.PacketConn = pcs[i]
		if servers[i], err = server.New(cfg); err != nil {
			tc.stopAll()
			t.Fatalf("node %d: %v", cfg.ID, err)
		}
		node.pc = pcs[i]
	}
	for i, node := range tc.nodes {
		ctx, cancel := context.WithCancel(context.Background())
		node.cancel, node.done = cancel, make(chan error, 1)
		go func() { node.done <- servers[i].Run(ctx) }()
	}
	t.Cleanup(tc.stopAll)
	return tc
}

// stop stops node i at once, as a crash looks to the others.
func (tc *testCluster) stop(i int) {
	node := tc.nodes[i]
	if node.cancel == nil {
		if node.pc != nil {
			node.pc.Close()
		}
		return
	}
	node.cancel()
	<-node.done
	node.pc.Close()
	node.cancel = nil
}

func (tc *testCluster) stopAll() {
	for i := range tc.nodes {
		tc.stop(i)
	}
}

// config returns a client Config with a fresh client certificate.
func (tc *testCluster) config() Config {
	tc.t.Helper()
	certPEM, keyPEM, err := tc.ca.IssueClient("client-test")
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, tc.config())
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { c.Close() })
	return c
}
