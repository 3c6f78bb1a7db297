package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
)

func TestMain(m *testing.M) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// startCluster starts three real nodes on 127.0.0.1 and returns the path
// of a client config file for them, as `lockd dev` writes it.
func startCluster(t *testing.T) string {
	t.Helper()
	_, path := startLocalCluster(t)
	return path
}

// startLocalCluster starts three in-process nodes and writes a lockctl
// config for them; it returns the cluster, for tests that stop nodes.
func startLocalCluster(t *testing.T) (*localcluster.Cluster, string) {
	t.Helper()
	dir := t.TempDir()
	lc, err := localcluster.Start(localcluster.Options{Groups: 4, Lease: time.Second, Dir: filepath.Join(dir, "cluster"),
		Tune: func(c *server.Config) { c.ExpiryInterval = 20 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	ca := lc.CA()
	certPEM, keyPEM, err := ca.IssueClient("lockctl-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyPair(dir, "client", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "lockctl.json")
	if err := client.WriteConfigFile(path, client.Config{Endpoints: lc.Endpoints(), CAFile: "ca.crt", CertFile: "client.crt", KeyFile: "client.key"}); err != nil {
		t.Fatal(err)
	}
	return lc, path
}
