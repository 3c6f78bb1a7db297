package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// Tests of the client protocol against scripted fake nodes.

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// A redirect is followed to the hinted master with the same command id.
func TestRedirectKeepsCommandID(t *testing.T) {
	fc := newFakeCluster(t, 2, 1)
	fc.setMaster(0, 1) // the client believes node 1; node 2 is the master
	n1, n2 := fc.nodes[0], fc.nodes[1]
	n1.setHandler(func(_ *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeHello {
			return nil
		}
		return &wire.Msg{Code: wire.CodeNotMaster, Hint: 2, HintAddr: n2.addr}
	})
	n2.setHandler(func(_ *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeAcquire {
			return &wire.Msg{Code: wire.CodeOK, Token: 7}
		}
		return okSessions(m)
	})
	c := fc.client()
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	l, err := s.Acquire(ctxT(t), "r", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() != 7 || l.SessionID() != 100 {
		t.Fatalf("token %d session %d, want 7 and 100", l.Token(), l.SessionID())
	}
	a, b := n1.requests(wire.TypeOpenSession), n2.requests(wire.TypeOpenSession)
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("OpenSession: node 1 got %d, node 2 got %d; want one each", len(a), len(b))
	}
	if a[0].Client != b[0].Client || a[0].Seq != b[0].Seq || a[0].Client == 0 || a[0].Seq == 0 {
		t.Fatalf("redirected with (%d,%d), first sent as (%d,%d): a retry must keep the command id", b[0].Client, b[0].Seq, a[0].Client, a[0].Seq)
	}
	if a[0].ReqID == b[0].ReqID {
		t.Fatalf("both attempts used ReqID %d", a[0].ReqID)
	}
	// Later requests go straight to the master the redirect taught.
	if got := len(n1.requests(wire.TypeAcquire)); got != 0 {
		t.Fatalf("node 1 got %d Acquire requests after the redirect taught the master", got)
	}
}

// Retryable answers are retried with the same command id and a fresh ReqID;
// the duplicate's first outcome is taken.
func TestRetryableCodesKeepCommandID(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	var calls atomic.Int32
	n.setHandler(func(_ *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type != wire.TypeRelease {
			return okSessions(m)
		}
		switch calls.Add(1) {
		case 1:
			return &wire.Msg{Code: wire.CodeOutcomeUnknown, Err: "not decided in time"}
		case 2:
			return &wire.Msg{Code: wire.CodeOverloaded}
		case 3:
			return nil // no answer: the client's RequestTimeout
		}
		return &wire.Msg{Code: wire.CodeOK, Flags: wire.FlagDuplicate}
	})
	n.setHandler(wrapAcquireOK(n.handle, 3))
	c := fc.client()
	c.cfg.RequestTimeout = 200 * time.Millisecond
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	l, err := s.Acquire(ctxT(t), "x", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	reqs := n.requests(wire.TypeRelease)
	if len(reqs) != 4 {
		t.Fatalf("%d Release attempts, want 4", len(reqs))
	}
	ids := map[uint64]bool{}
	for _, r := range reqs {
		if r.Client != reqs[0].Client || r.Seq != reqs[0].Seq {
			t.Fatalf("attempt (%d,%d) differs from the first (%d,%d)", r.Client, r.Seq, reqs[0].Client, reqs[0].Seq)
		}
		if r.Ack > r.Seq {
			t.Fatalf("Ack %d above the command's own Seq %d", r.Ack, r.Seq)
		}
		if ids[r.ReqID] {
			t.Fatalf("ReqID %d reused", r.ReqID)
		}
		ids[r.ReqID] = true
	}
}

// wrapAcquireOK answers Acquire with token tok and passes the rest on.
func wrapAcquireOK(next func(*fakeStream, *wire.Msg) *wire.Msg, tok uint64) func(*fakeStream, *wire.Msg) *wire.Msg {
	return func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeAcquire {
			return &wire.Msg{Code: wire.CodeOK, Token: tok}
		}
		return next(fs, m)
	}
}

// A grant pushed before the "queued" response still grants.
func TestGrantEventBeforeQueuedResponse(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	fc.nodes[0].setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeAcquire {
			fs.send(&wire.Msg{Type: wire.TypeEvent, ReqID: m.ReqID, Kind: wire.EventGranted, Session: m.Session, Name: m.Name, Token: 42})
			return &wire.Msg{Code: wire.CodeQueued}
		}
		return okSessions(m)
	})
	c := fc.client()
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	l, err := s.Acquire(ctxT(t), "e", LockOptions{})
	if err != nil || l.Token() != 42 {
		t.Fatalf("got %v, %v; want token 42", l, err)
	}
}

// A waiting acquire whose connection breaks is sent again, as the same
// command; when that answers "queued" as a duplicate, the holders are
// checked, since the grant may have been pushed to the dead connection.
func TestWaitingAcquireResentAfterReconnect(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	var granted atomic.Bool
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		switch m.Type {
		case wire.TypeAcquire:
			if len(n.requests(wire.TypeAcquire)) == 1 {
				return &wire.Msg{Code: wire.CodeQueued}
			}
			return &wire.Msg{Code: wire.CodeQueued, Flags: wire.FlagDuplicate}
		case wire.TypeLockStatus:
			r := &wire.Msg{Code: wire.CodeOK}
			if granted.Load() {
				r.Flags = wire.FlagHeld
				r.Holders = []wire.HolderItem{{Session: 999, Token: 5, Shared: true}, {Session: 100, Token: 9, Shared: true}}
			}
			return r
		}
		return okSessions(m)
	})
	c := fc.client()
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	got := make(chan *Lock, 1)
	go func() {
		l, err := s.Acquire(ctxT(t), "w", LockOptions{})
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, 5*time.Second, "the first Acquire", func() bool { return len(n.requests(wire.TypeAcquire)) == 1 })
	granted.Store(true) // granted while the client is away
	n.closeConns()
	var l *Lock
	select {
	case l = <-got:
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("the acquire did not come back after the reconnect")
	}
	if l == nil || l.Token() != 9 {
		t.Fatalf("got %v, want the grant with token 9 found in the holders", l)
	}
	reqs := n.requests(wire.TypeAcquire)
	if len(reqs) < 2 || reqs[1].Seq != reqs[0].Seq || reqs[1].Client != reqs[0].Client {
		t.Fatalf("re-sent acquires %+v: want the same command id", reqs)
	}
}

// Canceling a waiting acquire cancels the wait on the cluster, and
// releases a grant that raced with the cancel.
func TestCanceledAcquireCancelsWaitAndReleasesRacingGrant(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		switch m.Type {
		case wire.TypeAcquire:
			return &wire.Msg{Code: wire.CodeQueued}
		case wire.TypeCancelWait:
			return &wire.Msg{Code: wire.CodeNotFound, Token: 11, Err: "not waiting"}
		}
		return okSessions(m)
	})
	c := fc.client()
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := s.Acquire(ctx, "c", LockOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire: %v, want the context's error", err)
	}
	cw, rel := n.requests(wire.TypeCancelWait), n.requests(wire.TypeRelease)
	if len(cw) != 1 || cw[0].Name != "c" || cw[0].Session != 100 {
		t.Fatalf("CancelWait requests %+v", cw)
	}
	if len(rel) != 1 || rel[0].Token != 11 || rel[0].Name != "c" {
		t.Fatalf("Release requests %+v: want the racing grant (token 11) released", rel)
	}
}

// Ack stays at a waiting acquire's Seq until it is over, so the cluster
// keeps its outcome for a re-send; then it moves past it.
func TestAckStaysBelowOpenCommands(t *testing.T) {
	fc := newFakeCluster(t, 1, 2)
	n := fc.nodes[0]
	release := make(chan struct{})
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeAcquire && m.Name == "slow" {
			go func() {
				<-release
				fs.send(&wire.Msg{Type: wire.TypeEvent, ReqID: m.ReqID, Kind: wire.EventGranted, Token: 3})
			}()
			return &wire.Msg{Code: wire.CodeQueued}
		}
		if m.Type == wire.TypeAcquire {
			return &wire.Msg{Code: wire.CodeOK, Token: 2}
		}
		return okSessions(m)
	})
	c := fc.client()
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	done := make(chan error, 1)
	go func() {
		_, err := s.Acquire(ctxT(t), "slow", LockOptions{})
		done <- err
	}()
	waitFor(t, 5*time.Second, "the slow acquire", func() bool { return len(n.requests(wire.TypeAcquire)) == 1 })
	slowSeq := n.requests(wire.TypeAcquire)[0].Seq
	l, err := s.Acquire(ctxT(t), "fast", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Release(ctxT(t))
	for _, r := range n.requests(wire.TypeRelease) {
		if r.Ack > slowSeq {
			t.Fatalf("Ack %d passed the waiting acquire's Seq %d", r.Ack, slowSeq)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	l2, err := s.Acquire(ctxT(t), "fast", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	acqs := n.requests(wire.TypeAcquire)
	if last := acqs[len(acqs)-1]; last.Ack != last.Seq {
		t.Fatalf("with nothing else open, Ack %d should equal Seq %d", last.Ack, last.Seq)
	}
	_ = l2
}

// One KeepAlive per master node carries the items of the groups it serves.
func TestKeepAlivesBatchedPerMaster(t *testing.T) {
	fc := newFakeCluster(t, 2, 4)
	fc.setMaster(0, 1)
	fc.setMaster(1, 2)
	fc.setMaster(2, 1)
	fc.setMaster(3, 2)
	for _, n := range fc.nodes {
		n.setHandler(wrapAcquireOK(func(_ *fakeStream, m *wire.Msg) *wire.Msg { return okSessions(m) }, 1))
	}
	c := fc.client()
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	var names []string
	for i := 0; len(names) < 4; i++ {
		name := "k" + string(rune('a'+i))
		if int(c.groupOf(name)) == len(names) {
			names = append(names, name)
		}
	}
	for _, name := range names {
		if _, err := s.Acquire(ctxT(t), name, LockOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.renew(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, n := range fc.nodes {
		kas := n.requests(wire.TypeKeepAlive)
		if len(kas) != 1 {
			t.Fatalf("node %d got %d KeepAlives, want 1", n.id, len(kas))
		}
		var groups []uint32
		for _, it := range kas[0].KeepAlives {
			groups = append(groups, it.Group)
			if it.Session != 100+uint64(it.Group) {
				t.Fatalf("item %+v carries the wrong session", it)
			}
		}
		want := []uint32{0, 2}
		if n.id == 2 {
			want = []uint32{1, 3}
		}
		if len(groups) != 2 || groups[0] != want[0] || groups[1] != want[1] {
			t.Fatalf("node %d kept alive groups %v, want %v", n.id, groups, want)
		}
	}
}

// A keep-alive answered "session unknown" ends the session and its locks.
func TestSessionUnknownEndsSession(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	var gone atomic.Bool
	n.setHandler(wrapAcquireOK(func(_ *fakeStream, m *wire.Msg) *wire.Msg {
		r := okSessions(m)
		if m.Type == wire.TypeKeepAlive && gone.Load() {
			r.KeepAlives[0].Code = wire.CodeSessionUnknown
		}
		return r
	}, 4))
	c := fc.client()
	s, _ := c.NewSession(ctxT(t), SessionOptions{TTL: 5 * time.Second})
	l, err := s.Acquire(ctxT(t), "u", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gone.Store(true)
	if err := l.Renew(ctxT(t)); !errors.Is(err, ErrLockLost) || !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("Renew: %v, want ErrLockLost and ErrSessionExpired", err)
	}
	for what, ch := range map[string]<-chan struct{}{"Lost": l.Lost(), "Done": s.Done()} {
		select {
		case <-ch:
		default:
			t.Fatalf("%s is open after the master said the session is unknown", what)
		}
	}
	if _, err := s.Acquire(ctxT(t), "v", LockOptions{}); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("Acquire on an ended session: %v", err)
	}
}
