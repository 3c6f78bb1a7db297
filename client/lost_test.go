package client

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// Tests of the Lost deadline on a fake clock (Client.clk): Lost closes
// TTL-LostMargin after the *send* time of the last keep-alive answered OK.

// lostSetup opens a session (TTL 10s, margin 1.1s) on a fake node whose
// keep-alive answers the test controls, and acquires one lock.
func lostSetup(t *testing.T, keepAlive func(m *wire.Msg) *wire.Msg) (*fakeClock, *Session, *Lock, *fakeNode) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	n.setHandler(wrapAcquireOK(func(_ *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeKeepAlive {
			return keepAlive(m)
		}
		return okSessions(m)
	}, 1))
	c := fc.client()
	clk := newFakeClock()
	c.clk = clk
	s, err := c.NewSession(ctxT(t), SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Acquire(ctxT(t), "l", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return clk, s, l, n
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// settle lets the keep-alive goroutine run after the clock moved.
func settle() { time.Sleep(30 * time.Millisecond) }

func TestLostClosesAtTTLMinusMarginAfterLastOK(t *testing.T) {
	if m := DefaultLostMargin(10 * time.Second); m != 1100*time.Millisecond {
		t.Fatalf("default margin of a 10s TTL is %v, want 1.1s", m)
	}
	clk, s, l, _ := lostSetup(t, func(*wire.Msg) *wire.Msg { return nil }) // keep-alives vanish
	t0 := clk.Now()                                                        // the OpenSession was sent at t0
	if d, ok := s.deadline(); !ok || !d.Equal(t0.Add(8900*time.Millisecond)) {
		t.Fatalf("deadline %v (%v), want t0+8.9s", d.Sub(t0), ok)
	}
	for clk.Now().Sub(t0) < 8600*time.Millisecond {
		clk.Advance(300 * time.Millisecond)
		settle()
		if clk.Now().Sub(t0) < 8900*time.Millisecond && isClosed(l.Lost()) {
			t.Fatalf("Lost closed at t0+%v, before the deadline", clk.Now().Sub(t0))
		}
	}
	clk.Advance(8899*time.Millisecond - clk.Now().Sub(t0))
	settle()
	if isClosed(l.Lost()) {
		t.Fatal("Lost closed 1ms before the deadline")
	}
	clk.Advance(time.Millisecond)
	waitFor(t, 2*time.Second, "Lost to close at the deadline", func() bool { return isClosed(l.Lost()) })
	if err := s.Err(); !errors.Is(err, ErrSessionExpired) || !errors.Is(err, ErrLockLost) {
		t.Fatalf("session error %v, want ErrSessionExpired and ErrLockLost", err)
	}
}

// An answer that arrives late does not move the deadline: it counts from
// when the keep-alive was sent.
func TestLostCountsFromSendTimeNotArrival(t *testing.T) {
	arrived := make(chan *wire.Msg, 16)
	answer := make(chan bool)
	var silent atomic.Bool
	clk, s, l, _ := lostSetup(t, func(m *wire.Msg) *wire.Msg {
		if silent.Load() {
			return nil
		}
		arrived <- m
		if !<-answer {
			return nil
		}
		return okSessions(m)
	})
	t0 := clk.Now()
	// The keep-alive loop arms its timer for t0+TTL/3; Advance before that
	// would leave it counting from t0+3.4s (seen once in CI).
	waitFor(t, time.Minute, "the keep-alive loop to arm its timer", func() bool { return clk.armedBy(t0.Add(3400 * time.Millisecond)) })
	clk.Advance(3400 * time.Millisecond) // past TTL/3: a round is sent at t0+3.4s
	select {
	case <-arrived:
	case <-time.After(time.Minute): // a hang guard: the fake clock drives it
		t.Fatal("no keep-alive after TTL/3")
	}
	sent := clk.Now()
	silent.Store(true)
	clk.Advance(400 * time.Millisecond) // the answer takes 0.4s (the round waits 0.5s)
	settle()
	answer <- true
	waitFor(t, 2*time.Second, "the late answer to count", func() bool {
		d, _ := s.deadline()
		return d.After(t0.Add(8900 * time.Millisecond))
	})
	d, _ := s.deadline()
	if want := sent.Add(8900 * time.Millisecond); !d.Equal(want) {
		t.Fatalf("deadline t0+%v, want t0+%v: it must count from the send time", d.Sub(t0), want.Sub(t0))
	}
	for clk.Now().Before(d.Add(-300 * time.Millisecond)) {
		clk.Advance(300 * time.Millisecond)
		settle()
	}
	clk.Advance(d.Sub(clk.Now()) - time.Millisecond)
	settle()
	if isClosed(l.Lost()) {
		t.Fatalf("Lost closed at t0+%v, before its deadline t0+%v", clk.Now().Sub(t0), d.Sub(t0))
	}
	clk.Advance(d.Sub(clk.Now()))
	waitFor(t, 2*time.Second, "Lost to close", func() bool { return isClosed(l.Lost()) })
}

func TestSessionOptionsMargin(t *testing.T) {
	if _, err := (SessionOptions{TTL: 4 * time.Second, LostMargin: 3 * time.Second}).build(); err == nil {
		t.Fatal("a margin over TTL/2 was accepted")
	}
	o, err := SessionOptions{}.build()
	if err != nil || o.TTL != DefaultTTL || o.LostMargin != DefaultLostMargin(DefaultTTL) {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
}
