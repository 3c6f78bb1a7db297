// Package localcluster starts real lockd nodes in one process: real pebble
// stores in a temp dir, real QUIC on 127.0.0.1 with a throw-away CA, and,
// optionally, a quicnet.FaultConn under each node so that links can be
// slowed or cut while traffic flows. Benchmarks (lockctl bench --local) and
// tools use it; it does not depend on package testing.
//
// Every node of a Cluster shares the process: its CPU, its memory and its
// garbage collector. Figures measured on a local cluster are those of N
// nodes and their clients on one machine, not of one node.
package localcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// Options shape a local cluster. Zero values take the defaults beside them.
type Options struct {
	// Nodes is the number of nodes (default 3).
	Nodes int
	// Groups is the number of Paxos groups (default 4).
	Groups int
	// Window is the slots in flight per group (0: the server's default).
	Window int
	// Lease is the master lease (0: the server's default).
	Lease time.Duration
	// Faults puts a quicnet.FaultConn under every node, so that Delay,
	// Partition and Heal work.
	Faults bool
	// Dir holds the nodes' data dirs. When empty a temp dir is made and
	// removed by Close; a given Dir is left in place.
	Dir string
	// Logger receives the nodes' logs (default: discarded).
	Logger *slog.Logger
	// Tune, when set, edits each node's config before it starts.
	Tune func(*server.Config)
}

// Node is one node of the cluster. Its fields are set by Start and not
// changed afterwards, except by Stop and Restart (under Cluster.mu).
type Node struct {
	ID   paxos.NodeID
	Addr string

	cfg    server.Config
	srv    atomic.Pointer[server.Server] // nil until New returned
	fault  *quicnet.FaultConn
	pc     net.PacketConn
	cancel context.CancelFunc
	done   chan error
	// exited is closed when Run returned on its own or was stopped;
	// exitErr is what it returned (read after exited is closed).
	exited  chan struct{}
	exitErr error
}

// Cluster is a set of nodes running in this process.
type Cluster struct {
	opts   Options
	dir    string
	ownDir bool
	ca     *pki.CA

	mu      sync.Mutex // guards nodes' run state, clients and closed
	nodes   []*Node
	clients *tls.Config
	closed  bool
}

// Start starts the nodes and returns once each one runs (not yet once the
// groups have masters: see WaitForMasters). On error, whatever started is
// stopped again.
func Start(opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 1 || opts.Nodes > 9 {
		return nil, fmt.Errorf("local cluster: nodes is %d, want 1 to 9", opts.Nodes)
	}
	if opts.Groups == 0 {
		opts.Groups = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Cluster{opts: opts, dir: opts.Dir}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "lockd-local-")
		if err != nil {
			return nil, fmt.Errorf("local cluster: temp dir: %w", err)
		}
		c.dir, c.ownDir = d, true
	}
	ca, err := pki.NewCA("lockd local CA", 24*time.Hour)
	if err != nil {
		c.removeDir()
		return nil, fmt.Errorf("local cluster: %w", err)
	}
	c.ca = ca
	// Open every socket first, so that every node knows every address.
	peers := map[paxos.NodeID]string{}
	conns := make([]net.PacketConn, opts.Nodes)
	for i := range conns {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			for _, p := range conns[:i] {
				p.Close()
			}
			c.removeDir()
			return nil, fmt.Errorf("local cluster: listen on 127.0.0.1: %w", err)
		}
		conns[i] = pc
		peers[paxos.NodeID(i+1)] = pc.LocalAddr().String()
	}
	for i := range conns {
		id := paxos.NodeID(i + 1)
		cfg, err := c.nodeConfig(id, peers)
		if err == nil {
			n := &Node{ID: id, Addr: peers[id], cfg: cfg}
			c.nodes = append(c.nodes, n)
			err = c.startNode(n, conns[i])
		}
		if err != nil {
			for _, p := range conns[i+1:] {
				p.Close()
			}
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) nodeConfig(id paxos.NodeID, peers map[paxos.NodeID]string) (server.Config, error) {
	certPEM, keyPEM, err := c.ca.IssueNode(strconv.Itoa(int(id)), nil)
	if err != nil {
		return server.Config{}, fmt.Errorf("local cluster: node %d certificate: %w", id, err)
	}
	tlsConf, err := pki.NodeTLSConfig(c.ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		return server.Config{}, fmt.Errorf("local cluster: node %d TLS: %w", id, err)
	}
	cfg := server.Config{ID: id, Peers: peers, Groups: c.opts.Groups,
		DataDir: filepath.Join(c.dir, fmt.Sprintf("node%d", id)), TLS: tlsConf,
		Lease: c.opts.Lease, Window: c.opts.Window, Logger: c.opts.Logger}
	if c.opts.Tune != nil {
		c.opts.Tune(&cfg)
	}
	return cfg, nil
}

// startNode runs n on pc. The caller holds no lock (Start) or c.mu.
func (c *Cluster) startNode(n *Node, pc net.PacketConn) error {
	cfg := n.cfg
	n.pc = pc
	n.fault = nil
	if c.opts.Faults {
		n.fault = quicnet.NewFaultConn(pc, quicnet.FaultConfig{Seed: uint64(n.ID)})
		cfg.PacketConn = n.fault
	} else {
		cfg.PacketConn = pc
	}
	ctx, cancel := context.WithCancel(context.Background())
	if waitsForMember(cfg) {
		// New waits until a member introduces itself (for a --join node:
		// once a membership change adds it), so it runs with the node.
		n.srv.Store(nil)
		n.cancel, n.done, n.exited = cancel, make(chan error, 1), make(chan struct{})
		go func() {
			s, err := server.NewContext(ctx, cfg)
			if err == nil {
				n.srv.Store(s)
				err = s.Run(ctx)
			}
			n.exitErr = err
			close(n.exited)
			n.done <- err
		}()
		return nil
	}
	s, err := server.New(cfg)
	if err != nil {
		cancel()
		if n.fault != nil {
			n.fault.Close()
		}
		pc.Close()
		return fmt.Errorf("local cluster: node %d: %w", n.ID, err)
	}
	n.srv.Store(s)
	n.cancel, n.done, n.exited = cancel, make(chan error, 1), make(chan struct{})
	go func() {
		err := s.Run(ctx)
		n.exitErr = err
		close(n.exited)
		n.done <- err
	}()
	return nil
}

// waitsForMember reports whether a node started with cfg waits in New for a
// member of the cluster: a --join node whose data dir is new, or still
// waits to be told the cluster's founding configuration.
func waitsForMember(cfg server.Config) bool {
	if !cfg.Join {
		return false
	}
	pending, err := server.AwaitsFounding(cfg.DataDir)
	return err != nil || pending
}

// Join starts a brand-new node of the running cluster, as lockd run --join
// does: the next node id, an empty data dir, and as peers every node
// started so far and itself. It is no member of any group until a
// membership change adds it (client.AddMember); until then Server returns
// nil for it. It returns the node's index.
func (c *Cluster) Join() (int, error) {
	return c.JoinWith(nil)
}

// JoinWith is Join with the peers the new node is told limited to the
// nodes of indexes (all nodes started so far when nil): the new node must
// take the cluster's founding configuration from the cluster, whatever its
// peers say.
func (c *Cluster) JoinWith(indexes []int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errors.New("local cluster: closed")
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("local cluster: listen on 127.0.0.1: %w", err)
	}
	id := paxos.NodeID(len(c.nodes) + 1)
	peers := map[paxos.NodeID]string{id: pc.LocalAddr().String()}
	for i, n := range c.nodes {
		if indexes == nil || slices.Contains(indexes, i) {
			peers[n.ID] = n.Addr
		}
	}
	cfg, err := c.nodeConfig(id, peers)
	if err != nil {
		pc.Close()
		return 0, err
	}
	cfg.Join = true
	n := &Node{ID: id, Addr: peers[id], cfg: cfg}
	if err := c.startNode(n, pc); err != nil {
		return 0, err
	}
	c.nodes = append(c.nodes, n)
	return len(c.nodes) - 1, nil
}

// Exited returns a channel closed once node i's Run returned, on its own
// (a removed node stops) or because it was stopped, and what it returned.
// The error is valid only once the channel is closed.
func (c *Cluster) Exited(i int) (<-chan struct{}, func() error) {
	c.mu.Lock()
	n := c.nodes[i]
	ch := n.exited
	c.mu.Unlock()
	return ch, func() error {
		<-ch
		return n.exitErr
	}
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.nodes) }

// Groups is the cluster's group count.
func (c *Cluster) Groups() int { return c.opts.Groups }

// Dir is where the nodes keep their data.
func (c *Cluster) Dir() string { return c.dir }

// Node returns node i (0-based).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Server returns node i's server, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i].cancel == nil {
		return nil
	}
	return c.nodes[i].srv.Load()
}

// Running reports whether node i runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].cancel != nil
}

// Stop stops node i (0-based) as a crash looks to its peers and clients:
// its socket closes at once, so it answers nothing more, and nothing is
// handed over. Its data dir is kept for Restart. Stopping a stopped node
// does nothing.
func (c *Cluster) Stop(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(c.nodes[i])
}

func (c *Cluster) stopLocked(n *Node) error {
	if n.cancel == nil {
		return nil
	}
	// Close the socket before the node winds down, so that no goodbye
	// (a QUIC CONNECTION_CLOSE) reaches anyone: peers and clients see
	// silence, as after SIGKILL. The node does not close a socket it was
	// given, so closing it here is the only close.
	if n.fault != nil {
		n.fault.Close()
	} else {
		n.pc.Close()
	}
	n.cancel()
	err := <-n.done
	n.cancel = nil
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, server.ErrRemoved) {
		return fmt.Errorf("local cluster: node %d stopped with: %w", n.ID, err)
	}
	return nil
}

// Restart starts a stopped node again on the same address and data dir.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cancel != nil {
		return nil
	}
	var pc net.PacketConn
	var err error
	for try := 0; try < 50; try++ {
		if pc, err = net.ListenPacket("udp", n.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("local cluster: node %d: reopen %s: %w", n.ID, n.Addr, err)
	}
	return c.startNode(n, pc)
}

// RestartWith starts stopped node i again on its address with its config
// changed by tune (say another data dir, or Join set), which is kept for
// later restarts.
func (c *Cluster) RestartWith(i int, tune func(*server.Config)) error {
	c.mu.Lock()
	n := c.nodes[i]
	if n.cancel != nil {
		c.mu.Unlock()
		return fmt.Errorf("local cluster: node %d runs: stop it first", n.ID)
	}
	tune(&n.cfg)
	c.mu.Unlock()
	return c.Restart(i)
}

// Endpoints lists the nodes' client addresses, stopped nodes included.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr
	}
	return out
}

// ClientTLS returns a client TLS configuration with a certificate issued by
// the cluster's CA. Every call returns a clone of the same configuration.
func (c *Cluster) ClientTLS() (*tls.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients == nil {
		certPEM, keyPEM, err := c.ca.IssueClient("bench-client")
		if err != nil {
			return nil, fmt.Errorf("local cluster: client certificate: %w", err)
		}
		c.clients, err = pki.ClientTLSConfig(c.ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("local cluster: client TLS: %w", err)
		}
	}
	return c.clients.Clone(), nil
}

// CA returns the cluster's throw-away CA.
func (c *Cluster) CA() *pki.CA { return c.ca }

// Close stops every node and removes the temp dir it made. It is idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, c.stopLocked(n))
	}
	c.removeDir()
	return errors.Join(errs...)
}

func (c *Cluster) removeDir() {
	if c.ownDir {
		os.RemoveAll(c.dir)
	}
}
