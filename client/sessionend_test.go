package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// Tests of what a session's end does to the calls that serve it: they
// return at once, with an error matching ErrSessionExpired, and no call
// hands out a lock whose session is past its deadline.

// sessionEndBound is how long after Session.Done a blocking call may take to
// return before a test fails. The calls return within milliseconds; the
// bound only has to stay far below the retry loop's own give-up (seconds
// to tens of seconds), so that a loaded machine cannot miss it.
const sessionEndBound = 5 * time.Second

// jump moves the fake clock without firing its timers: the client's clock
// says the time has passed, but the keep-alive loop, asleep on a timer, has
// not run since, as in a process that was paused and has just resumed.
func (f *fakeClock) jump(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// countingClock is a fakeClock that counts the timers made: the keep-alive
// loop makes one per turn, after its deadline check.
type countingClock struct {
	*fakeClock
	timers atomic.Int32
}

func (c *countingClock) NewTimer(d time.Duration) timer {
	c.timers.Add(1)
	return c.fakeClock.NewTimer(d)
}

// A waiting Acquire whose connection broke is in the retry loop (invoke),
// re-sending to a node that does not answer, when its session ends: it
// returns at once with the session's error, not after the loop's attempts
// (RequestTimeout each) are used up.
func TestWaitingAcquireLeavesRetryLoopWhenSessionEnds(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeAcquire {
			if len(n.requests(wire.TypeAcquire)) == 1 {
				return &wire.Msg{Code: wire.CodeQueued}
			}
			return nil // the re-sends are never answered
		}
		return okSessions(m)
	})
	c := fc.client()
	c.cfg.RequestTimeout = 10 * time.Second // one unanswered attempt waits this long
	clk := newFakeClock()
	c.clk = clk
	s, err := c.NewSession(ctxT(t), SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *Lock
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l, err := s.Acquire(ctx, "w", LockOptions{})
		got <- result{l, err, time.Now()}
	}()
	waitFor(t, 5*time.Second, "the first Acquire", func() bool { return len(n.requests(wire.TypeAcquire)) == 1 })
	n.closeConns() // the waiter's connection breaks: the acquire is re-sent
	waitFor(t, 5*time.Second, "the re-sent Acquire", func() bool { return len(n.requests(wire.TypeAcquire)) >= 2 })

	clk.Advance(9 * time.Second) // past the deadline (TTL - margin = 8.9s): the session ends
	var doneAt time.Time
	select {
	case <-s.Done():
		doneAt = time.Now()
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("the session did not end after its deadline")
	}
	select {
	case r := <-got:
		if r.l != nil || !errors.Is(r.err, ErrSessionExpired) {
			t.Fatalf("Acquire returned %v (lock %v); want an error matching ErrSessionExpired", r.err, r.l != nil)
		}
		t.Logf("Acquire returned %v after Done closed: %v", max(r.at.Sub(doneAt), 0), r.err)
	case <-time.After(sessionEndBound):
		t.Fatalf("Acquire still blocked %v after Done closed: the retry loop does not watch the session", sessionEndBound)
	}
}

// deadlineSetup opens a session (TTL 10s: deadline 8.9s after the open was
// sent) on a fake node, on a counting fake clock.
func deadlineSetup(t *testing.T, handle func(fs *fakeStream, m *wire.Msg) *wire.Msg) (*countingClock, *Session, *fakeNode) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	n.setHandler(handle)
	c := fc.client()
	clk := &countingClock{fakeClock: newFakeClock()}
	c.clk = clk
	s, err := c.NewSession(ctxT(t), SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return clk, s, n
}

// checkGrantDropped checks that a call refused a grant because its session
// was past its deadline: the session's error, the session over, and the
// grant released in the background.
func checkGrantDropped(t *testing.T, s *Session, n *fakeNode, l *Lock, err error, token uint64) {
	t.Helper()
	if l != nil {
		t.Fatalf("got the lock (token %d): a grant past the session's deadline must not be handed out", l.Token())
	}
	if !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("got %v, want an error matching ErrSessionExpired", err)
	}
	if !isClosed(s.Done()) || !errors.Is(s.Err(), ErrSessionExpired) {
		t.Fatalf("the session is not over after its deadline passed: %v", s.Err())
	}
	waitFor(t, 5*time.Second, "the refused grant to be released", func() bool {
		for _, r := range n.requests(wire.TypeRelease) {
			if r.Token == token {
				return true
			}
		}
		return false
	})
}

// A grant that arrives when the session is past its deadline, before the
// keep-alive loop has noticed (the process was paused), is not returned by
// Acquire: it is released, and Acquire fails with the session's error.
func TestAcquireRefusesGrantPastDeadline(t *testing.T) {
	var waiting atomic.Pointer[fakeStream]
	var reqID atomic.Uint64
	clk, s, n := deadlineSetup(t, func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeAcquire {
			reqID.Store(m.ReqID)
			waiting.Store(fs)
			return &wire.Msg{Code: wire.CodeQueued}
		}
		return okSessions(m)
	})
	type result struct {
		l   *Lock
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := s.Acquire(ctxT(t), "p", LockOptions{})
		got <- result{l, err}
	}()
	waitFor(t, 5*time.Second, "the Acquire", func() bool { return waiting.Load() != nil })
	// The loop has taken in the open (a second turn) and sleeps on a timer
	// that jump does not fire.
	waitFor(t, 5*time.Second, "the keep-alive loop to sleep", func() bool { return clk.timers.Load() >= 2 })
	clk.jump(9 * time.Second)
	waiting.Load().send(&wire.Msg{Type: wire.TypeEvent, ReqID: reqID.Load(), Kind: wire.EventGranted, Session: 100, Name: "p", Token: 31})
	var r result
	select {
	case r = <-got:
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("Acquire did not return after the grant")
	}
	checkGrantDropped(t, s, n, r.l, r.err, 31)
}

// The same for TryAcquire, whose answer is the grant.
func TestTryAcquireRefusesGrantPastDeadline(t *testing.T) {
	var clk *countingClock
	var ready atomic.Bool
	clk, s, n := deadlineSetup(t, func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeAcquire {
			// The answer is delayed past the deadline, while the
			// keep-alive loop sleeps.
			for !ready.Load() || clk.timers.Load() < 2 {
				time.Sleep(time.Millisecond)
			}
			clk.jump(9 * time.Second)
			return &wire.Msg{Code: wire.CodeOK, Token: 32}
		}
		return okSessions(m)
	})
	ready.Store(true)
	l, err := s.TryAcquire(ctxT(t), "q", LockOptions{})
	checkGrantDropped(t, s, n, l, err, 32)
}

// The same for ResumeLock: the lock status comes back past the deadline
// that the keep-alive it sent first had set.
func TestResumeLockRefusesPastDeadline(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	c := fc.client()
	clk := newFakeClock()
	c.clk = clk
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeLockStatus {
			settle() // the keep-alive loop has taken in the answer and sleeps
			clk.jump(9 * time.Second)
			return &wire.Msg{Code: wire.CodeOK, Flags: wire.FlagHeld, Holders: []wire.HolderItem{{Session: 100, Token: 33}}}
		}
		return okSessions(m)
	})
	l, err := c.ResumeLock(ctxT(t), "r", 100, 33, SessionOptions{TTL: 10 * time.Second})
	if l != nil {
		t.Fatalf("ResumeLock handed out the lock (token %d) past its session's deadline", l.Token())
	}
	if !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("ResumeLock: %v; want an error matching ErrSessionExpired", err)
	}
	waitFor(t, 5*time.Second, "the resumed lock to be released", func() bool {
		rel := n.requests(wire.TypeRelease)
		return len(rel) > 0 && rel[0].Token == 33 && rel[0].Session == 100
	})
}

// A client waits in Acquire for a held lock on a real cluster; then its
// network is cut, every packet to and from it dropped. Its session ends
// (Done) when its deadline passes, and Acquire returns right after, with
// the session's error, whatever the connection is doing: the break of the
// cut connection sends the acquire into the retry loop, which used to
// watch only the context (about 16 s of attempts, then ErrUnavailable).
func TestIntegrationCutWaiterReturnsAtSessionEnd(t *testing.T) {
	tc := startClusterWith(t, 3, 2, true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	holder := tc.client()
	waiter, cut := tc.cuttableClient()
	sh, err := holder.NewSession(ctx, SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Acquire(ctx, "cut", LockOptions{}); err != nil {
		t.Fatal(err)
	}
	sw, err := waiter.NewSession(ctx, SessionOptions{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l      *Lock
		err    error
		at     time.Time
		doneAt bool // Done was closed when Acquire returned
	}
	got := make(chan result, 1)
	go func() {
		l, err := sw.Acquire(ctx, "cut", LockOptions{})
		got <- result{l, err, time.Now(), isClosed(sw.Done())}
	}()
	waitFor(t, 10*time.Second, "the waiter to queue", func() bool {
		info, err := holder.LockStatus(ctx, "cut")
		return err == nil && info.Waiters == 1
	})
	cutAt := time.Now()
	cut.cutNow()
	var doneAt time.Time
	select {
	case <-sw.Done():
		doneAt = time.Now()
	case r := <-got:
		t.Fatalf("Acquire returned %v (lock %v) before the session ended", r.err, r.l != nil)
	case <-time.After(20 * time.Second):
		t.Fatal("the cut-off waiter's session did not end")
	}
	select {
	case r := <-got:
		if r.l != nil || !errors.Is(r.err, ErrSessionExpired) {
			t.Fatalf("Acquire returned %v (lock %v); want an error matching ErrSessionExpired", r.err, r.l != nil)
		}
		if !r.doneAt {
			t.Fatal("Acquire returned before the session's Done closed")
		}
		t.Logf("cut; Done closed after %v; Acquire returned %v after Done: %v",
			doneAt.Sub(cutAt), max(r.at.Sub(doneAt), 0), r.err)
	case <-time.After(sessionEndBound):
		t.Fatalf("Acquire still blocked %v after Done closed (%v after the cut)", sessionEndBound, time.Since(cutAt))
	}
}

// ResumeLock right after a cluster starts, or while the lock's group moves
// to another node: the first keep-alives find no master ("not master"
// without a hint), and the session is alive all the while. ResumeLock
// waits through that and resumes the lock; it used to fail at once with
// "the cluster is unavailable" (lockctl release failed after a start).
func TestResumeLockWaitsThroughHandover(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	c := fc.client()
	var keepAlives atomic.Int32
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		switch m.Type {
		case wire.TypeKeepAlive:
			if keepAlives.Add(1) <= 3 {
				r := &wire.Msg{Code: wire.CodeOK}
				for _, it := range m.KeepAlives {
					it.Code = wire.CodeNotMaster
					r.KeepAlives = append(r.KeepAlives, it)
				}
				return r
			}
		case wire.TypeLockStatus:
			return &wire.Msg{Code: wire.CodeOK, Flags: wire.FlagHeld, Holders: []wire.HolderItem{{Session: 100, Token: 33}}}
		}
		return okSessions(m)
	})
	l, err := c.ResumeLock(ctxT(t), "r", 100, 33, SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatalf("ResumeLock during a handover: %v", err)
	}
	if l.Token() != 33 || l.SessionID() != 100 {
		t.Fatalf("resumed %d/%d, want session 100 token 33", l.SessionID(), l.Token())
	}
	if got := keepAlives.Load(); got < 4 {
		t.Fatalf("%d keep-alives, want the 3 refused ones and one more", got)
	}
}
