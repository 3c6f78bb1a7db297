package server

import (
	"context"
	"testing"
	"time"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
)

// expiredCount reads the lockd_sessions_expired_total counter: one per
// expiry the master decided on and proposed.
func expiredCount(t *testing.T, m *metrics) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "lockd_sessions_expired_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no lockd_sessions_expired_total metric")
	return 0
}

// TestNewMasterCountsSessionTTLFromPredecessorEnd: a node that starts
// serving a group gives every session a full TTL counted from when its
// predecessor stopped serving by its own count (Elector.PredecessorEnd),
// not from one lease earlier (which would expire sessions whose keep-alives
// the old master answered until its very end) and not from later. Every time
// is injected: expireGroup takes now as an argument and the Elector has no
// clock of its own, so the test never waits.
func TestNewMasterCountsSessionTTLFromPredecessorEnd(t *testing.T) {
	const (
		leaseLen = 10 * time.Second
		ttl      = 5 * time.Second
	)
	t0 := time.Unix(1_000_000, 0)
	el, err := election.New(election.Config{Self: 1, Nodes: []paxos.NodeID{1, 2, 3}, Groups: 1, Lease: leaseLen, Rand: func(int) int { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		cfg:      Config{Lease: leaseLen, ExpiryInterval: 100 * time.Millisecond},
		log:      discardLogger(),
		elector:  el,
		groups:   []*groupState{{table: lease.New(lease.DefaultLimits())}},
		metrics:  newMetrics(),
		sessions: newSessionClock(),
		ownIDs:   newCommandIDs(1 << 63),
	}
	// No own command may leave: there is no replica. Expiries are counted
	// by the metric, which expireGroup bumps before it proposes.
	s.ownInFlight.max = 0

	// A session of the group, opened (and last kept alive) under node 2.
	res := s.groups[0].table.Apply(lease.Position{Slot: 1}, lease.Command{Op: lease.OpOpenSession, Now: t0.UnixNano(), Client: 7, TTL: ttl})
	if res.Code != lease.CodeOK {
		t.Fatalf("open session: %v", res.Err())
	}

	// Node 2 holds the lease from t0; this node learns it at t0 and so
	// counts it until t0+lease.
	if err := el.Applied(0, 0, election.LeaseCmd{Holder: 2, Duration: leaseLen, Nonce: 7<<32 | 1}, t0); err != nil {
		t.Fatal(err)
	}
	pred := t0.Add(leaseLen)
	if got := el.PredecessorEnd(0); !got.Equal(pred) {
		t.Fatalf("PredecessorEnd %v, want %v", got, pred)
	}
	ctx := context.Background()
	if s.expireGroup(ctx, 0, pred.Add(-time.Second)); expiredCount(t, s.metrics) != 0 {
		t.Fatal("a node that does not serve the group expired a session")
	}

	// At pred this node, Paxos master, proposes its own lease; it is
	// chosen and applied a millisecond later, and the node serves.
	master := func(g paxos.GroupID) (paxos.GroupStatus, error) {
		return paxos.GroupStatus{Group: g, Role: "master", Ballot: paxos.Ballot{Round: 2, Node: 1}, Next: 2, Applied: 2}, nil
	}
	acts := el.Tick(pred, master)
	if len(acts) != 1 || acts[0].Kind != election.ActPropose || acts[0].Cmd.Holder != 1 {
		t.Fatalf("at the predecessor's end the elector asked for %+v, want a lease proposal of node 1", acts)
	}
	if err := el.Applied(0, 1, acts[0].Cmd, pred.Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if got := el.PredecessorEnd(0); !got.Equal(pred) {
		t.Fatalf("PredecessorEnd %v after our own lease, want %v", got, pred)
	}

	// The session is due exactly a TTL after pred: neither a lease before
	// (pred+ttl-lease, already past when serving starts) nor later.
	for _, c := range []struct {
		at     time.Duration // after pred
		expire bool
	}{
		{time.Millisecond, false}, // first round as master: the grace starts here
		{ttl / 2, false},
		{ttl, false}, // exactly a TTL of silence is not yet too long
		{ttl + time.Nanosecond, true},
	} {
		now := pred.Add(c.at)
		if !el.Serving(0, now) {
			t.Fatalf("not serving at pred+%v; the test needs the node to serve throughout", c.at)
		}
		s.expireGroup(ctx, 0, now)
		if got := expiredCount(t, s.metrics) > 0; got != c.expire {
			t.Fatalf("at pred+%v (serving since pred+1ms, predecessor ended at pred=%v, session TTL %v): expired=%v, want %v; "+
				"the grace must count the TTL from PredecessorEnd", c.at, pred.Format(time.RFC3339Nano), ttl, got, c.expire)
		}
	}
}
