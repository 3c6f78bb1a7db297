package quicnet

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/pki"
)

func TestMain(m *testing.M) {
	// quic-go warns once per process when the kernel caps UDP buffers
	// below 7 MiB (see the package comment for the sysctl). On loopback
	// that is harmless; keep test output readable.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(m.Run())
}

// testTB is what helpers need from *testing.T and *testing.B.
type testTB interface {
	testing.TB
	Output() io.Writer
}

// testLogger logs to the test output, at debug level with -v.
func testLogger(t testTB) *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// checkNoLeaks fails the test if goroutines of quicnet or quic-go are still
// running shortly after the test's other cleanups (Close calls) ran. Call it
// first in a test so that its cleanup runs last.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			leaked := leakedGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines still running after Close:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func leakedGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "testing.(*B)") || strings.Contains(g, "leakedGoroutines") {
			continue
		}
		if strings.Contains(g, "github.com/quic-go/quic-go") || strings.Contains(g, "github.com/lockd/lockd/quicnet") {
			out = append(out, g)
		}
	}
	return out
}

// waitFor polls cond every few milliseconds until it holds or timeout passes.
// hangGuard bounds waits for things that take well under a second on a
// quiet machine. It only stops a hung test; a busy machine never comes near.
const hangGuard = time.Minute

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testPKI is a cluster CA with helpers for node and client TLS.
type testPKI struct {
	t  testing.TB
	ca *pki.CA
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := pki.NewCA("quicnet test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, ca: ca}
}

func (p *testPKI) nodeTLS(id NodeID) *tls.Config {
	p.t.Helper()
	certPEM, keyPEM, err := p.ca.IssueNode(id.String(), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	cfg, err := pki.NodeTLSConfig(p.ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		p.t.Fatal(err)
	}
	return cfg
}

func (p *testPKI) clientTLS(name string) *tls.Config {
	p.t.Helper()
	var certPEM, keyPEM []byte
	if name != "" {
		var err error
		if certPEM, keyPEM, err = p.ca.IssueClient(name); err != nil {
			p.t.Fatal(err)
		}
	}
	cfg, err := pki.ClientTLSConfig(p.ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		p.t.Fatal(err)
	}
	return cfg
}

// listenUDP opens a loopback UDP socket closed at cleanup.
func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startNode creates a node and closes it at cleanup.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New node %d: %v", cfg.ID, err)
	}
	t.Cleanup(func() { closeNode(t, n) })
	return n
}

// closeNode closes n and fails the test if that takes long: Close must
// end every connection itself, never wait for an idle timeout.
func closeNode(t testing.TB, n *Node) {
	t.Helper()
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Errorf("close node %d: %v", n.ID(), err)
	}
	// A Close that waits for the default idle timeout (15s) takes that long;
	// 10s leaves a busy machine room without missing it.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("closing node %d took %v: something waited for a timeout", n.ID(), d)
	}
}

// inbox collects the messages a node receives.
type inbox struct {
	mu   sync.Mutex
	msgs map[NodeID][][]byte
	n    int
}

func newInbox() *inbox { return &inbox{msgs: make(map[NodeID][][]byte)} }

func (b *inbox) handle(from NodeID, msg []byte) {
	b.mu.Lock()
	b.msgs[from] = append(b.msgs[from], msg)
	b.n++
	b.mu.Unlock()
}

func (b *inbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

func (b *inbox) from(id NodeID) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.msgs[id]...)
}

// mesh is a set of nodes that know each other, each on its own socket
// (optionally wrapped in a FaultConn).
type mesh struct {
	pki    *testPKI
	nodes  map[NodeID]*Node
	inbox  map[NodeID]*inbox
	faults map[NodeID]*FaultConn
	addrs  map[NodeID]string
}

// newMesh starts nodes 1..n. withFaults puts a FaultConn under each node.
// tweak may adjust each node's Config before New.
func newMesh(t testTB, n int, withFaults bool, tweak func(*Config)) *mesh {
	t.Helper()
	m := &mesh{
		pki:    newTestPKI(t),
		nodes:  make(map[NodeID]*Node),
		inbox:  make(map[NodeID]*inbox),
		faults: make(map[NodeID]*FaultConn),
		addrs:  make(map[NodeID]string),
	}
	conns := make(map[NodeID]net.PacketConn)
	for i := 1; i <= n; i++ {
		id := NodeID(i)
		var pc net.PacketConn = listenUDP(t)
		if withFaults {
			fc := NewFaultConn(pc, FaultConfig{Seed: uint64(i)})
			t.Cleanup(func() { fc.Close() })
			m.faults[id] = fc
			pc = fc
		}
		conns[id] = pc
		m.addrs[id] = pc.LocalAddr().String()
	}
	for i := 1; i <= n; i++ {
		id := NodeID(i)
		m.inbox[id] = newInbox()
		cfg := Config{
			ID:           id,
			PacketConn:   conns[id],
			Peers:        m.addrs,
			TLS:          m.pki.nodeTLS(id),
			Handler:      m.inbox[id].handle,
			ReconnectMin: 10 * time.Millisecond,
			ReconnectMax: 200 * time.Millisecond,
			DialTimeout:  time.Second,
			IdleTimeout:  3 * time.Second,
			Logger:       testLogger(t),
		}
		if tweak != nil {
			tweak(&cfg)
		}
		m.nodes[id] = startNode(t, cfg)
	}
	return m
}

// connected reports whether node a sees a live connection to b.
func connected(n *Node, peer NodeID) bool {
	for _, s := range n.Stats() {
		if s.ID == peer {
			return s.Connected
		}
	}
	return false
}

// waitConnected waits until every pair of nodes is connected on both ends.
func (m *mesh) waitConnected(t testing.TB) {
	t.Helper()
	waitFor(t, hangGuard, "all peers connected", func() bool {
		for id, n := range m.nodes {
			for other := range m.nodes {
				if other != id && !connected(n, other) {
					return false
				}
			}
		}
		return true
	})
}

// seqMsg encodes (lane, seq) with padding to size bytes.
func seqMsg(lane, seq, size int) []byte {
	b := binary.AppendUvarint(nil, uint64(lane))
	b = binary.AppendUvarint(b, uint64(seq))
	for len(b) < size {
		b = append(b, 0xAB)
	}
	return b
}

func parseSeqMsg(b []byte) (lane, seq int, err error) {
	l, n1 := binary.Uvarint(b)
	s, n2 := binary.Uvarint(b[max(n1, 0):])
	if n1 <= 0 || n2 <= 0 {
		return 0, 0, fmt.Errorf("malformed test message %x", b)
	}
	return int(l), int(s), nil
}
