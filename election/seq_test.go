package election

import (
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// changes returns the events of ev that are changes of the log (their Seq is
// one more than the event before), as "seq:master" pairs.
func changes(t *testing.T, evs []Event) []Event {
	t.Helper()
	var out []Event
	var seq uint64
	for i, ev := range evs {
		switch {
		case ev.Seq == seq+1:
			out = append(out, ev)
		case ev.Seq != seq:
			t.Fatalf("event %d (%v): seq went from %d to %d", i, ev, seq, ev.Seq)
		}
		seq = ev.Seq
	}
	return out
}

// Events: two nodes that apply the same log at different times, one of
// which counts leases out before the next command arrives and one which
// does not, announce the same changes with the same Seq, one more each
// time, and both pass through "no master" between two masters.
func TestSeqIsTheSameOnEveryNodeAndGrowsByOne(t *testing.T) {
	late := newTestElector(t, 1, nil)  // counts every lease out first
	quick := newTestElector(t, 2, nil) // applies every command in time
	var evs [2][]Event
	for i, e := range []*Elector{late, quick} {
		ch, cancel, err := e.Subscribe(map[paxos.GroupID]uint64{0: 0})
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		log := []LeaseCmd{
			foreignLease(3, 1), foreignLease(3, 2), // node 3, renewed
			foreignLease(2, 1), // node 2 takes over
			{Holder: 2, Release: true, To: 3, Nonce: foreignLease(2, 2).Nonce}, // hands over
			foreignLease(3, 3), // node 3 again
			foreignLease(2, 3), // node 2 takes over
		}
		now := t0
		for slot, c := range log {
			if e == late {
				now = now.Add(3 * time.Second) // every lease has run out
				e.Master(0, now)
			} else {
				now = now.Add(100 * time.Millisecond)
			}
			mustApply(t, e, 0, uint64(slot), c, now)
		}
		evs[i] = drain(ch)
	}
	a, b := changes(t, evs[0]), changes(t, evs[1])
	if len(a) != 5 || len(b) != 5 {
		t.Fatalf("changes: %v and %v, want 5 each (3, 2, none, 3, 2)", a, b)
	}
	for i := range a {
		if a[i].Seq != b[i].Seq || a[i].Master != b[i].Master || a[i].Epoch != b[i].Epoch {
			t.Fatalf("change %d: %v on one node, %v on the other", i, a[i], b[i])
		}
	}
	for n, list := range evs {
		var prev paxos.NodeID
		for _, ev := range list {
			if ev.Master != 0 && prev != 0 && ev.Master != prev {
				t.Fatalf("node %d: master %d to %d without \"no master\": %v", n, prev, ev.Master, list)
			}
			prev = ev.Master
		}
	}
}

// Events: a reader that saw a lease run out on one node, which died before
// it told of the renewal that came after, resumes on a node that never
// counted the lease out: it is told the master is back, with the same Seq.
func TestResumeTellsARenewalTheReaderMissed(t *testing.T) {
	x := newTestElector(t, 1, nil)
	y := newTestElector(t, 2, nil)
	mustApply(t, x, 0, 0, foreignLease(3, 1), t0)
	mustApply(t, y, 0, 0, foreignLease(3, 1), t0)
	x.Master(0, t0.Add(3*time.Second)) // x counts node 3's lease out
	ch, cancel, err := x.Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	var seen Event
	for _, ev := range drain(ch) {
		if ev.Group == 0 {
			seen = ev
		}
	}
	cancel()
	if seen.Master != 0 || seen.Cause != CauseExpired || seen.Seq != 1 {
		t.Fatalf("x says %v, want no master (expired) at seq 1", seen)
	}
	// Node 3 renews; y applies it in time, x dies before it does.
	mustApply(t, y, 0, 1, foreignLease(3, 2), t0.Add(1900*time.Millisecond))
	ch, cancel, err = y.Resume(map[paxos.GroupID]Event{0: seen})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	var got []Event
	for _, ev := range drain(ch) {
		if ev.Group == 0 {
			got = append(got, ev)
		}
	}
	if len(got) != 1 || got[0].Master != 3 || got[0].Cause != CauseRenewed || got[0].Seq != 1 || got[0].Epoch <= seen.Epoch {
		t.Fatalf("resumed on y after %v: got %v, want node 3 again (renewed, seq 1, a later epoch)", seen, got)
	}
	// A reader that is up to date gets nothing more.
	ch2, cancel2, err := y.Resume(map[paxos.GroupID]Event{0: got[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	for _, ev := range drain(ch2) {
		if ev.Group == 0 {
			t.Fatalf("an up-to-date reader got %v", ev)
		}
	}
}
