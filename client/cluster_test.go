package client

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
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
	lc, err := localcluster.Start(localcluster.Options{Nodes: n, Groups: groups, Lease: time.Second, Dir: t.TempDir(),
		Logger: testLogger(), Tune: func(c *server.Config) { c.ExpiryInterval = 20 * time.Millisecond }})
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
