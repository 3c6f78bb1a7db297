package election

import (
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// One test per rule of the package doc, in its order.

// Rule 2: the holder counts its lease from the send, minus Drift; the others
// count from when they applied it. So the holder's lease ends first.
func TestHolderCountsFromSendOthersFromLearn(t *testing.T) {
	e1, e2 := newTestElector(t, 1, nil), newTestElector(t, 2, nil)
	a, sent := tickUntil(t, e1, 0, ActPropose, t0, t0.Add(time.Second), asMaster(1))
	// The holder applies its own lease late (a slow disk, say), node 2 early.
	learned1, learned2 := sent.Add(300*time.Millisecond), sent.Add(50*time.Millisecond)
	mustApply(t, e1, 0, 0, a.Cmd, learned1)
	mustApply(t, e2, 0, 0, a.Cmd, learned2)

	holderEnd := sent.Add(DefaultLease - DefaultLease/20)
	if !e1.Serving(0, learned1) || !e1.Serving(0, holderEnd.Add(-time.Nanosecond)) {
		t.Fatalf("holder does not serve between applying its lease and send+Lease-Drift")
	}
	if e1.Serving(0, holderEnd) {
		t.Fatalf("holder serves at send+Lease-Drift (%v after the send); it counts from when it learned the lease", holderEnd.Sub(sent))
	}
	otherEnd := learned2.Add(DefaultLease)
	if m, _ := e2.Master(0, otherEnd.Add(-time.Nanosecond)); m != 1 {
		t.Fatalf("node 2 sees master %d just before learn+Lease, want 1", m)
	}
	if m, _ := e2.Master(0, otherEnd); m != 0 {
		t.Fatalf("node 2 still sees master %d at learn+Lease", m)
	}
	if !holderEnd.Before(otherEnd) {
		t.Fatalf("holder's lease ends at %v, node 2's count at %v: the holder must believe it for less time", holderEnd.Sub(t0), otherEnd.Sub(t0))
	}
}

// Rule 2: the drift margin covers clocks that run 1% fast or slow. The
// holder's clock runs slow and node 2's fast, node 2 learns the lease at the
// very instant it is sent, and takes over the instant its count ends: the
// holder must have stopped by then in real time. With a 10ms margin it has
// not, which shows the margin is what protects.
func TestDriftMarginCoversOnePercentClocks(t *testing.T) {
	check := func(drift time.Duration) (lastServe, firstFree time.Duration) {
		e1 := newTestElector(t, 1, func(c *Config) { c.Drift = drift })
		e2 := newTestElector(t, 2, nil)
		slow := func(real time.Duration) time.Time { return t0.Add(time.Duration(float64(real) * 0.99)) }
		fast := func(real time.Duration) time.Time { return t0.Add(time.Duration(float64(real) * 1.01)) }
		a, sent := tickUntil(t, e1, 0, ActPropose, t0, t0.Add(time.Second), asMaster(1))
		real0 := time.Duration(float64(sent.Sub(t0)) / 0.99)
		mustApply(t, e1, 0, 0, a.Cmd, slow(real0))
		mustApply(t, e2, 0, 0, a.Cmd, fast(real0))
		for r := real0; r < real0+3*time.Second; r += time.Millisecond {
			if e1.Serving(0, slow(r)) {
				lastServe = r
			}
			if m, _ := e2.Master(0, fast(r)); m == 0 && firstFree == 0 {
				firstFree = r
			}
		}
		return lastServe, firstFree
	}
	if last, free := check(DefaultLease / 20); last >= free {
		t.Fatalf("default drift: holder serves until %v real, node 2 free from %v", last, free)
	}
	if last, free := check(10 * time.Millisecond); last < free {
		t.Fatalf("10ms drift: holder stops at %v, before node 2 is free at %v; this scenario should break a margin below 2%%", last, free)
	}
}

// Rule 3: a new master applied the old master's lease before its own; it
// serves only once that lease is over by its own count.
func TestNewMasterWaitsOutOldLease(t *testing.T) {
	e2 := newTestElector(t, 2, nil)
	e2.PeerUp(1, false) // the old master is gone, so no handover back to it
	a, sent := tickUntil(t, e2, 0, ActPropose, t0, t0.Add(time.Second), asMaster(2))
	// Node 1's lease reaches node 2 only now (phase 1 found it), and lands
	// in the log before node 2's own.
	learnedOld := sent.Add(10 * time.Millisecond)
	mustApply(t, e2, 0, 0, foreignLease(1, 1), learnedOld)
	mustApply(t, e2, 0, 1, a.Cmd, sent.Add(20*time.Millisecond))
	if m, _ := e2.Master(0, sent.Add(20*time.Millisecond)); m != 2 {
		t.Fatalf("master %d after node 2's lease, want 2", m)
	}
	slot := uint64(2)
	oldEnd := learnedOld.Add(DefaultLease)
	for now := sent.Add(50 * time.Millisecond); now.Before(oldEnd.Add(time.Second)); now = now.Add(time.Millisecond) {
		if now.Sub(t0)%(50*time.Millisecond) == 0 {
			if r, ok := find(e2.Tick(now, asMaster(2)), 0, ActPropose); ok {
				mustApply(t, e2, 0, slot, r.Cmd, now.Add(5*time.Millisecond))
				slot++
			}
		}
		if got, want := e2.Serving(0, now), !now.Before(oldEnd); got != want {
			t.Fatalf("at %v (old lease ends at %v) node 2 serving=%v, want %v", now.Sub(t0), oldEnd.Sub(t0), got, want)
		}
	}
}

// Rule 4: no campaign while another node's lease may hold; after it ends the
// preferred node goes first and the others wait CampaignDelay per rank.
func TestNoCampaignWhileAnotherLeaseHolds(t *testing.T) {
	first := map[paxos.NodeID]time.Duration{}
	for _, self := range []paxos.NodeID{1, 2} {
		e := newTestElector(t, self, nil)
		mustApply(t, e, 0, 0, foreignLease(3, 1), t0)
		// A renewal a second later pushes the end out.
		mustApply(t, e, 0, 1, foreignLease(3, 2), t0.Add(time.Second))
		end := t0.Add(time.Second + DefaultLease)
		for now := t0; now.Before(end.Add(time.Second)); now = now.Add(50 * time.Millisecond) {
			acts := e.Tick(now, asFollower(0))
			if _, ok := find(acts, 0, ActCampaign); ok {
				if now.Before(end) {
					t.Fatalf("node %d campaigned at %v while node 3's lease holds until %v", self, now.Sub(t0), end.Sub(t0))
				}
				first[self] = now.Sub(end)
				break
			}
		}
	}
	d, j, tick := DefaultCampaignDelay, DefaultCampaignDelay/2, DefaultTick
	if w, ok := first[1]; !ok || w > j+tick {
		t.Fatalf("preferred node 1 campaigned %v after the lease ended (found %v), want within jitter %v + one tick", w, ok, j)
	}
	if w, ok := first[2]; !ok || w < d || w > d+j+tick {
		t.Fatalf("node 2 (rank 1) campaigned %v after the lease ended (found %v), want between %v and %v", w, ok, d, d+j+tick)
	}
}

// Rule 4: a node that sees no majority up does not campaign.
func TestNoCampaignWithoutMajority(t *testing.T) {
	e := newTestElector(t, 1, nil)
	e.PeerUp(2, false)
	e.PeerUp(3, false)
	for now := t0; now.Before(t0.Add(5 * time.Second)); now = now.Add(50 * time.Millisecond) {
		if acts := e.Tick(now, asFollower(0)); len(acts) > 0 {
			t.Fatalf("node 1 alone acted at %v: %+v", now.Sub(t0), acts)
		}
	}
	e.PeerUp(3, true)
	tickUntil(t, e, 0, ActCampaign, t0.Add(5*time.Second), t0.Add(6*time.Second), asFollower(0))
}

// Rule 5: a new Paxos master proposes its lease only once it applied what
// phase 1 found.
func TestLeaseOnlyAfterPhase1IsApplied(t *testing.T) {
	e := newTestElector(t, 1, nil)
	behind := func(g paxos.GroupID) (paxos.GroupStatus, error) {
		return paxos.GroupStatus{Group: g, Role: "master", Ballot: paxos.Ballot{Round: 4, Node: 1}, Next: 5, Applied: 3}, nil
	}
	for now := t0; now.Before(t0.Add(time.Second)); now = now.Add(50 * time.Millisecond) {
		if _, ok := find(e.Tick(now, behind), 0, ActPropose); ok {
			t.Fatalf("proposed a lease at %v with slots 3 and 4 of phase 1 not applied", now.Sub(t0))
		}
	}
	caughtUp := func(g paxos.GroupID) (paxos.GroupStatus, error) {
		return paxos.GroupStatus{Group: g, Role: "master", Ballot: paxos.Ballot{Round: 4, Node: 1}, Next: 9, Applied: 5}, nil
	}
	tickUntil(t, e, 0, ActPropose, t0.Add(time.Second), t0.Add(2*time.Second), caughtUp)
}

// holderRun drives e as the master of group 0 from `from` to `to`, ticking
// every 50ms; a proposal is applied 5ms after its Tick when apply says so,
// else reported Failed. It returns the send times of the applied leases and
// the times at which e served, by millisecond.
func holderRun(t *testing.T, e *Elector, from, to time.Time, apply func(now time.Time) bool, st func(time.Time) statusFunc) (sent []time.Time, serving []bool) {
	t.Helper()
	slot := uint64(0)
	type pending struct {
		at  time.Time
		cmd LeaseCmd
	}
	var queue []pending
	for now := from; now.Before(to); now = now.Add(time.Millisecond) {
		for len(queue) > 0 && !queue[0].at.After(now) {
			mustApply(t, e, 0, slot, queue[0].cmd, now)
			slot++
			queue = queue[1:]
		}
		if now.Sub(from)%(50*time.Millisecond) == 0 {
			for _, a := range e.Tick(now, st(now)) {
				if a.Group != 0 || a.Kind != ActPropose {
					continue
				}
				if apply(now) {
					queue = append(queue, pending{now.Add(5 * time.Millisecond), a.Cmd})
					sent = append(sent, now)
				} else {
					e.Failed(0, a.Cmd.Nonce, &paxos.NotMasterError{Group: 0})
				}
			}
		}
		serving = append(serving, e.Serving(0, now))
	}
	return sent, serving
}

// Rule 6: the holder renews every RenewEvery, so it serves without a break.
func TestRenewalBeforeExpiry(t *testing.T) {
	e := newTestElector(t, 1, nil)
	always := func(time.Time) bool { return true }
	sent, serving := holderRun(t, e, t0, t0.Add(20*time.Second), always, func(time.Time) statusFunc { return asMaster(1) })
	start := -1
	for i, s := range serving {
		if s && start < 0 {
			start = i
		}
		if !s && start >= 0 {
			t.Fatalf("holder stopped serving at %v although every renewal was chosen", time.Duration(i)*time.Millisecond)
		}
	}
	if start < 0 || start > 200 {
		t.Fatalf("holder started serving at %dms, want within 200ms", start)
	}
	for i := 1; i < len(sent); i++ {
		if gap := sent[i].Sub(sent[i-1]); gap != DefaultLease/4 {
			t.Fatalf("renewal %d came %v after the previous one, want every %v", i, gap, DefaultLease/4)
		}
	}
}

// Rule 6: when renewals fail, the holder stops serving at its own
// conservative expiry (last chosen send + Lease - Drift), and keeps trying.
func TestStopsServingAtOwnConservativeExpiry(t *testing.T) {
	e := newTestElector(t, 1, nil)
	cut := t0.Add(5 * time.Second)
	until := func(now time.Time) bool { return now.Before(cut) }
	var tries int
	st := func(now time.Time) statusFunc {
		if now.Before(cut) {
			return asMaster(1)
		}
		tries++ // the node lost Paxos mastership too: it must campaign
		return asFollower(0)
	}
	sent, serving := holderRun(t, e, t0, t0.Add(10*time.Second), until, st)
	end := sent[len(sent)-1].Add(DefaultLease - DefaultLease/20)
	for i, s := range serving {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		if now.After(sent[0].Add(10*time.Millisecond)) && now.Before(end) && !s {
			t.Fatalf("holder stopped serving at %v, before its conservative expiry %v", now.Sub(t0), end.Sub(t0))
		}
		if !now.Before(end) && s {
			t.Fatalf("holder serves at %v, after its conservative expiry %v", now.Sub(t0), end.Sub(t0))
		}
	}
	if tries == 0 {
		t.Fatal("holder stopped asking for Paxos status after losing its renewals; it must keep trying")
	}
}

// Rule 7: handover. The holder stops serving first, then releases; every
// node treats the group as masterless at once; the preferred node campaigns
// without delay and serves within a few round trips, not a lease later.
func TestPreferredNodeGetsGroupBack(t *testing.T) {
	e1, e2, e3 := newTestElector(t, 1, nil), newTestElector(t, 2, nil), newTestElector(t, 3, nil)
	all := []*Elector{e1, e2, e3}
	e2.PeerUp(1, false)
	a, now := tickUntil(t, e2, 0, ActPropose, t0, t0.Add(2*time.Second), asMaster(2))
	for _, e := range all {
		mustApply(t, e, 0, 0, a.Cmd, now.Add(5*time.Millisecond))
	}
	now = now.Add(50 * time.Millisecond)
	if !e2.Serving(0, now) {
		t.Fatal("node 2 does not serve group 0 after its lease")
	}

	// Node 1 comes back.
	e2.PeerUp(1, true)
	rel, ok := find(e2.Tick(now, asMaster(2)), 0, ActPropose)
	if !ok || !rel.Cmd.Release || rel.Cmd.To != 1 {
		t.Fatalf("node 2 did not release group 0 to node 1: %+v", rel)
	}
	if e2.Serving(0, now) {
		t.Fatal("node 2 still serves after it decided to release: it must stop before the release is proposed")
	}
	released := now.Add(5 * time.Millisecond)
	for _, e := range all {
		mustApply(t, e, 0, 1, rel.Cmd, released)
		if m, _ := e.Master(0, released); m != 0 {
			t.Fatalf("node %d sees master %d after the release, want none", e.cfg.Self, m)
		}
	}
	// Paxos still hears node 2 as master; node 1 campaigns anyway, at once,
	// and node 3 waits its rank delay.
	if _, ok := find(e1.Tick(released.Add(time.Millisecond), asFollower(2)), 0, ActCampaign); !ok {
		t.Fatal("node 1 did not campaign at once for the group handed to it")
	}
	if acts := e3.Tick(released.Add(time.Millisecond), asFollower(2)); len(acts) > 0 {
		t.Fatalf("node 3 acted right after a release to node 1: %+v", acts)
	}
	won := released.Add(20 * time.Millisecond)
	l, ok := find(e1.Tick(won, func(g paxos.GroupID) (paxos.GroupStatus, error) {
		return paxos.GroupStatus{Group: g, Role: "master", Ballot: paxos.Ballot{Round: 9, Node: 1}, Next: 2, Applied: 2}, nil
	}), 0, ActPropose)
	if !ok || l.Cmd.Release {
		t.Fatal("node 1 won phase 1 but proposed no lease")
	}
	for _, e := range all {
		mustApply(t, e, 0, 2, l.Cmd, won.Add(5*time.Millisecond))
	}
	if !e1.Serving(0, won.Add(5*time.Millisecond)) {
		t.Fatal("node 1 does not serve at once after a clean handover; it waits out a released lease")
	}
	if e2.Serving(0, won.Add(5*time.Millisecond)) {
		t.Fatal("node 2 serves again after handing over")
	}
	// Node 2 does not hand the group over again within HandoverBackoff.
	for _, e := range all {
		if m, _ := e.Master(0, won.Add(5*time.Millisecond)); m != 1 {
			t.Fatalf("node %d sees master %d, want 1", e.cfg.Self, m)
		}
	}
}

// Rule 7: a release counts only against the holder's own latest lease of the
// same incarnation sent before it.
func TestStaleReleaseIsIgnored(t *testing.T) {
	e := newTestElector(t, 1, nil)
	mustApply(t, e, 1, 0, foreignLease(2, 5), t0)
	stale := []LeaseCmd{
		{Holder: 2, Release: true, To: 1, Nonce: makeNonce(0x999, 9)},                                 // another incarnation
		{Holder: 2, Release: true, To: 1, Nonce: foreignLease(2, 4).Nonce},                            // sent before the lease
		{Holder: 3, Release: true, To: 1, Nonce: makeNonce(incarnation(foreignLease(3, 1).Nonce), 9)}, // not the holder
	}
	for i, c := range stale {
		mustApply(t, e, 1, uint64(i+1), c, t0.Add(time.Millisecond))
		if m, _ := e.Master(1, t0.Add(time.Millisecond)); m != 2 {
			t.Fatalf("stale release %v ended node 2's lease", c)
		}
	}
	mustApply(t, e, 1, 9, LeaseCmd{Holder: 2, Release: true, To: 1, Nonce: foreignLease(2, 6).Nonce}, t0.Add(2*time.Millisecond))
	if m, _ := e.Master(1, t0.Add(2*time.Millisecond)); m != 0 {
		t.Fatalf("node 2's own release did not end its lease: master %d", m)
	}
}

// PredecessorEnd bounds when another holder last served: the end of its
// latest lease by this node's count, or the moment its release was learned;
// this node's own leases do not move it.
func TestPredecessorEnd(t *testing.T) {
	e := newTestElector(t, 2, nil)
	if end := e.PredecessorEnd(0); !end.IsZero() {
		t.Fatalf("PredecessorEnd before any lease = %v, want zero", end)
	}
	mustApply(t, e, 0, 0, foreignLease(1, 1), t0)
	mustApply(t, e, 0, 1, foreignLease(1, 2), t0.Add(500*time.Millisecond)) // a renewal
	if got, want := e.PredecessorEnd(0), t0.Add(500*time.Millisecond+DefaultLease); !got.Equal(want) {
		t.Fatalf("after node 1's renewal: PredecessorEnd = %v, want %v", got.Sub(t0), want.Sub(t0))
	}
	// Node 1 hands over: it stopped serving before it sent the release.
	released := t0.Add(800 * time.Millisecond)
	mustApply(t, e, 0, 2, LeaseCmd{Holder: 1, Release: true, To: 2, Nonce: foreignLease(1, 3).Nonce}, released)
	if got := e.PredecessorEnd(0); !got.Equal(released) {
		t.Fatalf("after node 1's release: PredecessorEnd = %v, want %v (when the release was learned)", got.Sub(t0), released.Sub(t0))
	}
	// Node 2's own lease leaves it alone.
	a, sent := tickUntil(t, e, 0, ActPropose, released, released.Add(5*time.Second), asMaster(2))
	mustApply(t, e, 0, 3, a.Cmd, sent.Add(time.Millisecond))
	if !e.Serving(0, sent.Add(2*time.Millisecond)) {
		t.Fatal("node 2 does not serve its own lease")
	}
	if got := e.PredecessorEnd(0); !got.Equal(released) {
		t.Fatalf("node 2's own lease moved PredecessorEnd to %v", got.Sub(t0))
	}
	if end := e.PredecessorEnd(99); !end.IsZero() {
		t.Fatalf("PredecessorEnd of a group that does not exist = %v, want zero", end)
	}
}
