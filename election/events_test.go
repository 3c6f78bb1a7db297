package election

import (
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// drain reads what is queued on ch without blocking.
func drain(ch <-chan Event) []Event {
	var out []Event
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, ev)
		default:
			return out
		}
	}
}

// Events: ordered per group by a log-derived epoch, "no master" included,
// resumable from any kept epoch without gaps, and a reader too far behind
// gets ErrResync with the current state.
func TestEventsOrderedResumableNoGaps(t *testing.T) {
	e := newTestElector(t, 1, func(c *Config) { c.History = 4 })
	all, cancel, err := e.Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if got := drain(all); len(got) != 3 || got[0].Epoch != 0 || got[0].Master != 0 {
		t.Fatalf("a new subscriber gets %v, want the state of the 3 groups (no master, epoch 0)", got)
	}
	// Group 0: node 2, a renewal (no change), node 3, expiry, node 2 again,
	// a release, node 3.
	now := t0
	step := func(d time.Duration) time.Time { now = now.Add(d); return now }
	mustApply(t, e, 0, 0, foreignLease(2, 1), step(0))
	mustApply(t, e, 0, 1, foreignLease(2, 2), step(time.Second))
	mustApply(t, e, 0, 2, foreignLease(3, 1), step(time.Second))
	e.Master(0, step(3*time.Second)) // node 3's lease runs out
	mustApply(t, e, 0, 3, foreignLease(2, 3), step(time.Second))
	mustApply(t, e, 0, 4, LeaseCmd{Holder: 2, Release: true, To: 1, Nonce: foreignLease(2, 4).Nonce}, step(time.Second))
	mustApply(t, e, 0, 7, foreignLease(3, 2), step(time.Second))

	type want struct {
		epoch  uint64
		master paxos.NodeID
		cause  Cause
		seq    uint64
	}
	// Node 3's lease follows node 2's directly: the log says node 2's ran
	// out, so "no master" comes first (epoch 10), though this node's count
	// of it had not run out yet. Seq counts the log's changes only.
	wants := []want{{4, 2, CauseLease, 1}, {10, 0, CauseExpired, 1}, {12, 3, CauseLease, 2}, {14, 0, CauseExpired, 2},
		{16, 2, CauseLease, 3}, {21, 0, CauseReleased, 4}, {32, 3, CauseLease, 5}}
	got := drain(all)
	if len(got) != len(wants) {
		t.Fatalf("got %d events %v, want %d", len(got), got, len(wants))
	}
	for i, w := range wants {
		if g := got[i]; g.Group != 0 || g.Epoch != w.epoch || g.Master != w.master || g.Cause != w.cause || g.Seq != w.seq {
			t.Fatalf("event %d is %v, want epoch %d seq %d master %d (%v)", i, g, w.epoch, w.seq, w.master, w.cause)
		}
	}
	if m, ep := e.Master(0, now); m != 3 || ep != 32 {
		t.Fatalf("Master = %d at epoch %d, want 3 at 32", m, ep)
	}

	// Resume after each kept event: exactly the events after it, in order.
	// History 4 keeps the last four (epochs 14, 16, 21, 32), so any epoch
	// from 12 on resumes.
	for i := 2; i < len(got); i++ {
		since := got[i].Epoch
		ch, cancel, err := e.Subscribe(map[paxos.GroupID]uint64{0: since})
		if err != nil {
			t.Fatalf("resume after epoch %d: %v", since, err)
		}
		rest := drain(ch)
		cancel()
		if len(rest) != 2+len(got)-i-1 { // groups 1 and 2 come with their state
			t.Fatalf("resume after epoch %d: %v", since, rest)
		}
		var g0 []Event
		for _, ev := range rest {
			if ev.Group == 0 {
				g0 = append(g0, ev)
			}
		}
		for j, ev := range g0 {
			if ev.Epoch != got[i+1+j].Epoch {
				t.Fatalf("resume after epoch %d: event %d has epoch %d, want %d (a gap)", since, j, ev.Epoch, got[i+1+j].Epoch)
			}
		}
	}
	// A client that saw epoch 4 on another node missed epoch 12, which is no
	// longer kept.
	_, _, err = e.Subscribe(map[paxos.GroupID]uint64{0: 4})
	var re *ResyncError
	if !errors.Is(err, ErrResync) || !errors.As(err, &re) {
		t.Fatalf("resume after a trimmed epoch: err %v, want a ResyncError", err)
	}
	if len(re.Current) != 3 || re.Current[0].Master != 3 || re.Current[0].Epoch != 32 || re.Groups[0].OldestResume != 12 {
		t.Fatalf("resync error carries %+v / %+v, want group 0 at master 3 epoch 32, resumable from 12", re.Current, re.Groups)
	}
	// Live events keep flowing to the first subscriber, in order.
	mustApply(t, e, 0, 8, foreignLease(2, 5), step(time.Second))
	if ev := drain(all); len(ev) != 2 || ev[0].Epoch != 34 || ev[0].Master != 0 || ev[1].Epoch != 36 || ev[1].Master != 2 || ev[1].Seq != 6 {
		t.Fatalf("live events %v, want no master at epoch 34, then node 2 at epoch 36 (seq 6)", ev)
	}
}

// Events: a subscriber that does not read is dropped with a reason, and the
// election never waits for it.
func TestSlowSubscriberIsDroppedNotBlocking(t *testing.T) {
	e := newTestElector(t, 1, func(c *Config) { c.SubscriberQueue = 4 })
	slow, _, err := e.Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	fast, cancelFast, err := e.Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	var fastGot []Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		now := t0
		for i := range 100 {
			holder := paxos.NodeID(2 + i%2)
			if err := e.Applied(0, uint64(i), foreignLease(holder, uint32(i+1)), now); err != nil {
				t.Error(err)
				return
			}
			now = now.Add(10 * time.Millisecond)
			fastGot = append(fastGot, drain(fast)...)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // a hang guard: Applied never blocks
		t.Fatal("Applied blocked on a subscriber that does not read")
	}
	got := drain(slow)
	if len(got) == 0 || got[len(got)-1].Err != ErrSlowSubscriber {
		t.Fatalf("slow subscriber's last event %v, want one with ErrSlowSubscriber", got)
	}
	if _, ok := <-slow; ok {
		t.Fatal("slow subscriber's channel is still open")
	}
	// 3 states, 100 leases, and "no master" before each of the 99 that
	// take over from the other node.
	if len(fastGot) != 3+100+99 {
		t.Fatalf("a subscriber that reads got %d events, want 202", len(fastGot))
	}
	cancelFast()
	cancelFast() // twice is harmless
	if _, ok := <-fast; ok {
		t.Fatal("cancel did not close the channel")
	}
}
