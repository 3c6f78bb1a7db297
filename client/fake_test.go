package client

import (
	"context"
	"crypto/tls"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

func TestMain(m *testing.M) {
	// quic-go warns when the kernel caps UDP buffers; harmless on loopback.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	code := m.Run()
	stopExampleCluster()
	os.Exit(code)
}

// fakeCluster is a few in-process quicnet listeners speaking internal/wire,
// scripted by the test, for protocol-level tests of the client: what it
// sends, in which order, to whom, and how it takes each answer.
type fakeCluster struct {
	t      *testing.T
	ca     *pki.CA
	groups int
	nodes  []*fakeNode

	mu sync.Mutex // guards masters
	// masters holds each group's master (node ID, 0 for none), as the
	// default Hello answer tells it.
	masters []uint32
}

// fakeNode is one listener. handle answers a request: it returns the
// response (nil: no answer), and may push frames itself with fs.send.
type fakeNode struct {
	fc   *fakeCluster
	id   uint32
	node *quicnet.Node
	addr string

	mu      sync.Mutex // guards the fields below
	handle  func(fs *fakeStream, m *wire.Msg) *wire.Msg
	reqs    []wire.Msg
	streams []*fakeStream
	arrived chan struct{} // cap 1: a request was recorded
}

// fakeStream is one client stream on a fake node.
type fakeStream struct {
	n    *fakeNode
	conn *quicnet.Conn
	st   *quicnet.Stream
}

func (fs *fakeStream) send(m *wire.Msg) {
	fs.st.WriteFrame(wire.Append(nil, m))
}

func newFakeCluster(t *testing.T, n, groups int) *fakeCluster {
	t.Helper()
	ca, err := pki.NewCA("fake CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeCluster{t: t, ca: ca, groups: groups, masters: make([]uint32, groups)}
	for i := 0; i < n; i++ {
		id := uint32(i + 1)
		certPEM, keyPEM, err := ca.IssueNode(strconv.Itoa(int(id)), nil)
		if err != nil {
			t.Fatal(err)
		}
		tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		qn, err := quicnet.New(quicnet.Config{ID: quicnet.NodeID(id), ListenAddr: "127.0.0.1:0", TLS: tlsConf, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		fn := &fakeNode{fc: fc, id: id, node: qn, addr: qn.Addr().String(), arrived: make(chan struct{}, 1)}
		fc.nodes = append(fc.nodes, fn)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn.accept(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			qn.Close()
			<-done
		})
	}
	fc.mu.Lock() // the nodes above accept connections already
	for g := range fc.masters {
		fc.masters[g] = 1
	}
	fc.mu.Unlock()
	return fc
}

func (fc *fakeCluster) setMaster(g int, id uint32) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.masters[g] = id
}

// status is the default answer to Hello and ClusterStatus.
func (fc *fakeCluster) status() *wire.Msg {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	m := &wire.Msg{Code: wire.CodeOK, Groups: uint32(fc.groups)}
	for _, n := range fc.nodes {
		m.Members = append(m.Members, wire.MemberItem{ID: n.id, Addr: n.addr, Up: true})
	}
	for g, id := range fc.masters {
		it := wire.MasterItem{Group: uint32(g), Epoch: 4, Master: id}
		if id != 0 {
			it.Addr = fc.nodes[id-1].addr
		}
		m.Masters = append(m.Masters, it)
	}
	return m
}

// client connects a Client to the fake cluster through node 1.
func (fc *fakeCluster) client() *Client {
	fc.t.Helper()
	certPEM, keyPEM, err := fc.ca.IssueClient("fake-client")
	if err != nil {
		fc.t.Fatal(err)
	}
	tlsConf, err := pki.ClientTLSConfig(fc.ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		fc.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(ctx, Config{Endpoints: []string{fc.nodes[0].addr}, TLS: tlsConf, Logger: testLogger(), RequestTimeout: 2 * time.Second})
	if err != nil {
		fc.t.Fatal(err)
	}
	fc.t.Cleanup(func() { c.Close() })
	return c
}

func (n *fakeNode) accept(ctx context.Context) {
	for {
		conn, err := n.node.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			for {
				st, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				fs := &fakeStream{n: n, conn: conn, st: st}
				n.mu.Lock()
				n.streams = append(n.streams, fs)
				n.mu.Unlock()
				go fs.serve()
			}
		}()
	}
}

func (fs *fakeStream) serve() {
	n := fs.n
	for {
		b, err := fs.st.ReadFrame()
		if err != nil {
			return
		}
		m, err := wire.Decode(b)
		if err != nil {
			n.fc.t.Errorf("node %d: undecodable request: %v", n.id, err)
			return
		}
		n.mu.Lock()
		n.reqs = append(n.reqs, m)
		h := n.handle
		n.mu.Unlock()
		select {
		case n.arrived <- struct{}{}:
		default:
		}
		var resp *wire.Msg
		if h != nil {
			resp = h(fs, &m)
		}
		if resp == nil && (m.Type == wire.TypeHello || m.Type == wire.TypeClusterStatus) {
			resp = n.fc.status()
		}
		if resp != nil {
			resp.Type, resp.ReqID, resp.Node = wire.TypeResponse, m.ReqID, n.id
			fs.send(resp)
		}
	}
}

// setHandler replaces the node's request handler.
func (n *fakeNode) setHandler(h func(fs *fakeStream, m *wire.Msg) *wire.Msg) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handle = h
}

// requests returns the requests of type t the node received, in order.
func (n *fakeNode) requests(t wire.Type) []wire.Msg {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []wire.Msg
	for _, m := range n.reqs {
		if m.Type == t {
			out = append(out, m)
		}
	}
	return out
}

// closeConns closes every client connection to the node, as a crash of
// the node's process would look to the client.
func (n *fakeNode) closeConns() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, fs := range n.streams {
		fs.conn.Close()
	}
	n.streams = nil
}

// waitFor polls cond until it holds, or fails the test after timeout.
// waitFor polls cond. timeout is what a quiet machine needs at most; the
// wait only fails after a hang guard well above it, so that a machine busy
// with other work does not fail the test (issue 9, part 6).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout = 4*timeout + 30*time.Second
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// okSessions is a handler fragment: it opens sessions (IDs 100+group) and
// answers keep-alives OK.
func okSessions(m *wire.Msg) *wire.Msg {
	switch m.Type {
	case wire.TypeOpenSession:
		return &wire.Msg{Code: wire.CodeOK, Session: 100 + uint64(m.Group), Group: m.Group}
	case wire.TypeKeepAlive:
		r := &wire.Msg{Code: wire.CodeOK}
		for _, it := range m.KeepAlives {
			it.Code = wire.CodeOK
			r.KeepAlives = append(r.KeepAlives, it)
		}
		return r
	case wire.TypeCloseSession, wire.TypeRelease, wire.TypeCancelWait:
		return &wire.Msg{Code: wire.CodeOK}
	}
	return nil
}

// fakeClock is a clock moved by hand.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clk *fakeClock
	at  time.Time
	ch  chan time.Time
	off bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{clk: f, at: f.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- f.now
		t.off = true
		return t
	}
	f.timers = append(f.timers, t)
	return t
}

// armedBy reports whether a live timer is due at or before at: a test that
// waits for it before Advance knows the goroutine it drives has armed its
// timer, and Advance will fire it (a timer armed after the clock moved
// would count from the new time).
func (f *fakeClock) armedBy(at time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.timers {
		if !t.off && !t.at.After(at) {
			return true
		}
	}
	return false
}

// Advance moves the clock and fires the timers that are due.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	keep := f.timers[:0]
	for _, t := range f.timers {
		switch {
		case t.off:
		case !t.at.After(f.now):
			t.ch <- f.now
			t.off = true
		default:
			keep = append(keep, t)
		}
	}
	f.timers = keep
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := !t.off
	t.off = true
	return was
}

func clientTLS(ca, cert, key []byte) (*tls.Config, error) { return pki.ClientTLSConfig(ca, cert, key) }
