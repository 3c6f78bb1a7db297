package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
)

func TestMain(m *testing.M) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(m.Run())
}

// startCluster starts three real nodes on 127.0.0.1 and returns the path
// of a client config file for them, as `lockd dev` writes it.
func startCluster(t *testing.T) string {
	t.Helper()
	ca, err := pki.NewCA("lockctl test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const n = 3
	peers := map[paxos.NodeID]string{}
	pcs := make([]net.PacketConn, n)
	var endpoints []string
	for i := range pcs {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		pcs[i] = pc
		peers[paxos.NodeID(i+1)] = pc.LocalAddr().String()
		endpoints = append(endpoints, pc.LocalAddr().String())
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	servers := make([]*server.Server, n)
	for i := range servers {
		id := paxos.NodeID(i + 1)
		certPEM, keyPEM, err := ca.IssueNode(strconv.Itoa(int(id)), nil)
		if err != nil {
			t.Fatal(err)
		}
		tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		// Every node is made before any runs: see client/cluster_test.go.
		servers[i], err = server.New(server.Config{ID: id, Peers: peers, Groups: 4, DataDir: filepath.Join(dir, fmt.Sprintf("node%d", id)),
			TLS: tlsConf, PacketConn: pcs[i], Lease: time.Second, ExpiryInterval: 20 * time.Millisecond, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range servers {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
	}
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
	if err := client.WriteConfigFile(path, client.Config{Endpoints: endpoints, CAFile: "ca.crt", CertFile: "client.crt", KeyFile: "client.key"}); err != nil {
		t.Fatal(err)
	}
	return path
}
