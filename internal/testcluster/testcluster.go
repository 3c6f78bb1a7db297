// Package testcluster starts real lockd nodes in one process for tests and
// benchmarks: real pebble stores in temp dirs, real QUIC on 127.0.0.1 with
// a throw-away CA, and optionally a fault-injecting PacketConn per node.
package testcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// Options shape a test cluster. Zero values take defaults.
type Options struct {
	Nodes  int           // default 3
	Groups int           // default 4
	Lease  time.Duration // default server default
	Window int
	// Faults wraps each node's socket in a quicnet.FaultConn.
	Faults bool
	// Logger for the nodes (default: discard; set LOCKD_TEST_LOG=1 to see).
	Logger *slog.Logger
	// Tune, if set, edits each node's config before it starts.
	Tune func(*server.Config)
}

// Node is one running node.
type Node struct {
	ID     paxos.NodeID
	Addr   string
	Server *server.Server
	Fault  *quicnet.FaultConn
	cfg    server.Config
	pc     net.PacketConn
	cancel context.CancelFunc
	done   chan error
}

// Cluster is a set of running nodes.
type Cluster struct {
	t       testing.TB
	opts    Options
	dir     string
	CA      *pki.CA
	Nodes   []*Node
	mu      sync.Mutex
	clients *tls.Config
}

// Start starts a cluster and stops it when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Groups == 0 {
		opts.Groups = 4
	}
	if opts.Logger == nil {
		if os.Getenv("LOCKD_TEST_LOG") != "" {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
	}
	ca, err := pki.NewCA("lockd test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, opts: opts, dir: t.TempDir(), CA: ca}
	// Open every socket first, so that every node knows every address.
	peers := map[paxos.NodeID]string{}
	conns := make([]net.PacketConn, opts.Nodes)
	for i := range conns {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = pc
		peers[paxos.NodeID(i+1)] = pc.LocalAddr().String()
	}
	for i := range conns {
		id := paxos.NodeID(i + 1)
		certPEM, keyPEM, err := ca.IssueNode(strconv.Itoa(int(id)), nil)
		if err != nil {
			t.Fatal(err)
		}
		tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg := server.Config{ID: id, Peers: peers, Groups: opts.Groups, DataDir: filepath.Join(c.dir, fmt.Sprintf("node%d", id)),
			TLS: tlsConf, Lease: opts.Lease, Window: opts.Window, Logger: opts.Logger}
		if opts.Tune != nil {
			opts.Tune(&cfg)
		}
		n := &Node{ID: id, Addr: peers[id], cfg: cfg}
		c.Nodes = append(c.Nodes, n)
		c.startNode(n, conns[i])
	}
	t.Cleanup(c.Stop)
	return c
}

func (c *Cluster) startNode(n *Node, pc net.PacketConn) {
	c.t.Helper()
	cfg := n.cfg
	n.pc = pc
	if c.opts.Faults {
		n.Fault = quicnet.NewFaultConn(pc, quicnet.FaultConfig{Seed: uint64(n.ID)})
		cfg.PacketConn = n.Fault
	} else {
		cfg.PacketConn = pc
	}
	s, err := server.New(cfg)
	if err != nil {
		pc.Close()
		c.t.Fatalf("node %d: %v", n.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.Server, n.cancel, n.done = s, cancel, make(chan error, 1)
	go func() { n.done <- s.Run(ctx) }()
}

// StopNode stops node i (0-based) as a crash would look to its peers: it
// stops answering at once. Its data dir is kept for Restart.
func (c *Cluster) StopNode(i int) {
	n := c.Nodes[i]
	if n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
	n.cancel = nil
	// The node does not close a socket it was given.
	if n.Fault != nil {
		n.Fault.Close()
	}
	n.pc.Close()
}

// RestartNode starts a stopped node again on the same address and data dir.
func (c *Cluster) RestartNode(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	var pc net.PacketConn
	var err error
	for try := 0; try < 50; try++ {
		if pc, err = net.ListenPacket("udp", n.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("node %d: reopen %s: %v", n.ID, n.Addr, err)
	}
	c.startNode(n, pc)
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for i := range c.Nodes {
		c.StopNode(i)
	}
}

// Endpoints lists the nodes' addresses.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// ClientTLS returns a client TLS config with a certificate from the CA.
func (c *Cluster) ClientTLS() *tls.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients == nil {
		certPEM, keyPEM, err := c.CA.IssueClient("test-client")
		if err != nil {
			c.t.Fatal(err)
		}
		c.clients, err = pki.ClientTLSConfig(c.CA.CertPEM(), certPEM, keyPEM)
		if err != nil {
			c.t.Fatal(err)
		}
	}
	return c.clients.Clone()
}

// WaitForMasters waits until every group is served by some running node and
// returns the serving node's index per group.
func (c *Cluster) WaitForMasters(timeout time.Duration) []int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		masters := make([]int, c.opts.Groups)
		for g := range masters {
			masters[g] = -1
		}
		found := 0
		for i, n := range c.Nodes {
			if n.cancel == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := n.Server.Status(ctx)
			cancel()
			if err != nil {
				continue
			}
			for _, g := range st.Groups {
				if g.Serving && masters[g.Group] == -1 {
					masters[g.Group] = i
					found++
				}
			}
		}
		if found == c.opts.Groups {
			return masters
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after %v, only %d of %d groups have a serving master: %v", timeout, found, c.opts.Groups, masters)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
