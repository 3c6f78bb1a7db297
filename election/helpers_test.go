package election

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

var t0 = time.Unix(1_000_000, 0)

// newTestElector returns node self of a three-node cluster with three
// groups; group g prefers node g+1.
func newTestElector(t *testing.T, self paxos.NodeID, mod func(*Config)) *Elector {
	t.Helper()
	cfg := Config{Self: self, Nodes: []paxos.NodeID{3, 1, 2}, Groups: 3, Rand: rand.New(rand.NewPCG(7, uint64(self))).IntN}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type statusFunc = func(paxos.GroupID) (paxos.GroupStatus, error)

// asMaster reports this node as the Paxos master of every group, caught up.
func asMaster(self paxos.NodeID) statusFunc {
	return func(g paxos.GroupID) (paxos.GroupStatus, error) {
		return paxos.GroupStatus{Group: g, Role: "master", Ballot: paxos.Ballot{Round: 1, Node: self}, Master: self}, nil
	}
}

// asFollower reports this node as a follower that hears master m (0: none).
func asFollower(m paxos.NodeID) statusFunc {
	return func(g paxos.GroupID) (paxos.GroupStatus, error) {
		return paxos.GroupStatus{Group: g, Role: "follower", Master: m}, nil
	}
}

// find returns the first action of kind for g.
func find(acts []Action, g paxos.GroupID, kind ActionKind) (Action, bool) {
	for _, a := range acts {
		if a.Group == g && a.Kind == kind {
			return a, true
		}
	}
	return Action{}, false
}

// tickUntil ticks e every 50ms from `from` until Tick returns an action of
// kind for g, and returns it with the time of that Tick. It fails the test
// if none comes before limit.
func tickUntil(t *testing.T, e *Elector, g paxos.GroupID, kind ActionKind, from, limit time.Time, st statusFunc) (Action, time.Time) {
	t.Helper()
	for now := from; now.Before(limit); now = now.Add(50 * time.Millisecond) {
		if a, ok := find(e.Tick(now, st), g, kind); ok {
			return a, now
		}
	}
	t.Fatalf("node %d: no %v for group %d between %v and %v", e.cfg.Self, kind, g, from.Sub(t0), limit.Sub(t0))
	return Action{}, time.Time{}
}

// foreignLease is a lease command of another node, as it would propose it.
func foreignLease(holder paxos.NodeID, ctr uint32) LeaseCmd {
	return LeaseCmd{Holder: holder, Duration: DefaultLease, Nonce: makeNonce(0xabc0+uint32(holder), ctr)}
}

func mustApply(t *testing.T, e *Elector, g paxos.GroupID, slot uint64, c LeaseCmd, now time.Time) {
	t.Helper()
	if err := e.Applied(g, slot, c, now); err != nil {
		t.Fatal(err)
	}
}
