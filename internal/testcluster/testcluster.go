// Package testcluster starts real lockd nodes in one process for tests: a
// thin wrapper over internal/localcluster that fails the test instead of
// returning errors and stops the cluster when the test ends.
package testcluster

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
)

// Options shape a test cluster; see localcluster.Options. Logs are
// discarded unless LOCKD_TEST_LOG is set.
type Options = localcluster.Options

// Cluster is a running test cluster.
type Cluster struct {
	*localcluster.Cluster
	t testing.TB
}

// Start starts a cluster and stops it when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Logger == nil {
		if os.Getenv("LOCKD_TEST_LOG") != "" {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	lc, err := localcluster.Start(opts)
	if err != nil {
		t.Fatalf("start a local cluster: %v", err)
	}
	t.Cleanup(func() { lc.Close() })
	return &Cluster{Cluster: lc, t: t}
}

// Addr is node i's address (0-based).
func (c *Cluster) Addr(i int) string { return c.Endpoints()[i] }

// StopNode stops node i as a crash looks to its peers; its data is kept.
func (c *Cluster) StopNode(i int) {
	c.t.Helper()
	if err := c.Stop(i); err != nil {
		c.t.Fatalf("stop node %d: %v", i+1, err)
	}
}

// RestartNode starts a stopped node again on its address and data dir.
func (c *Cluster) RestartNode(i int) {
	c.t.Helper()
	if err := c.Restart(i); err != nil {
		c.t.Fatalf("restart node %d: %v", i+1, err)
	}
}

// ClientTLS returns a client TLS config with a certificate from the CA.
func (c *Cluster) ClientTLS() *tls.Config {
	c.t.Helper()
	conf, err := c.Cluster.ClientTLS()
	if err != nil {
		c.t.Fatal(err)
	}
	return conf
}

// WaitForMasters waits until every group is served by a running node and
// returns the serving node's index per group.
func (c *Cluster) WaitForMasters(timeout time.Duration) []int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	masters, err := c.Cluster.WaitForMasters(ctx)
	if err != nil {
		c.t.Fatalf("wait for masters: %v", err)
	}
	return masters
}
