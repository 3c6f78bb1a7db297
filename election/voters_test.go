package election

import (
	"slices"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Issue 11 (membership): a group's election counts over its voters in
// force, not over a static node list.

// TestLearnerNeverCampaigns: a node that waits to join (not in Nodes) or
// is a learner of a group never campaigns for it, however long the group
// goes without a master; once SetVoters lists it, it does.
func TestLearnerNeverCampaigns(t *testing.T) {
	e := newTestElector(t, 4, nil) // node 4 of a cluster of 1, 2, 3: waiting to join
	limit := t0.Add(time.Minute)
	for now := t0; now.Before(limit); now = now.Add(50 * time.Millisecond) {
		if acts := e.Tick(now, asFollower(0)); len(acts) > 0 {
			t.Fatalf("a node that is no voter acted at %v: %+v", now.Sub(t0), acts)
		}
	}
	e.SetVoters(1, []paxos.NodeID{2, 3, 4})
	tickUntil(t, e, 1, ActCampaign, limit, limit.Add(time.Minute), asFollower(0))
	for now := limit; now.Before(limit.Add(10 * time.Second)); now = now.Add(50 * time.Millisecond) {
		for _, a := range e.Tick(now, asFollower(0)) {
			if a.Group != 1 {
				t.Fatalf("campaigned for group %d, where it is no voter: %+v", a.Group, a)
			}
		}
	}
}

// TestRankAndPreferredFollowVoters: the preferred node of group g is the
// voter at g mod len(voters), and the majority-up check counts voters only:
// two down voters of three stop a campaign even while other nodes are up.
func TestRankAndPreferredFollowVoters(t *testing.T) {
	e := newTestElector(t, 2, nil)
	e.SetVoters(0, []paxos.NodeID{4, 2, 5}) // sorted 2 4 5: group 0 prefers node 2
	if got := e.Voters(0); !slices.Equal(got, []paxos.NodeID{2, 4, 5}) {
		t.Fatalf("voters %v, want [2 4 5]", got)
	}
	if gm := e.Snapshot(t0)[0]; gm.Preferred != 2 {
		t.Fatalf("group 0 prefers %d, want 2", gm.Preferred)
	}
	e.PeerUp(4, false)
	e.PeerUp(5, false)
	for now := t0; now.Before(t0.Add(30 * time.Second)); now = now.Add(50 * time.Millisecond) {
		if _, ok := find(e.Tick(now, asFollower(0)), 0, ActCampaign); ok {
			t.Fatalf("campaigned for group 0 with 2 of its 3 voters down at %v", now.Sub(t0))
		}
	}
	e.PeerUp(4, true)
	tickUntil(t, e, 0, ActCampaign, t0.Add(30*time.Second), t0.Add(time.Minute), asFollower(0))
	if got := e.Nodes(); !slices.Equal(got, []paxos.NodeID{1, 2, 3, 4, 5}) {
		t.Fatalf("nodes %v, want every voter of some group [1 2 3 4 5]", got)
	}
}

// TestRemovedMasterHandsOver: a node that holds a group's lease when it
// stops being a voter of the group releases it to a voter.
func TestRemovedMasterHandsOver(t *testing.T) {
	e := newTestElector(t, 1, nil)
	a, at := tickUntil(t, e, 0, ActPropose, t0, t0.Add(time.Minute), asMaster(1))
	mustApply(t, e, 0, 1, a.Cmd, at)
	e.SetVoters(0, []paxos.NodeID{2, 3, 4})
	for now := at.Add(50 * time.Millisecond); now.Before(at.Add(10 * time.Second)); now = now.Add(50 * time.Millisecond) {
		if p, ok := find(e.Tick(now, asMaster(1)), 0, ActPropose); ok {
			if !p.Cmd.Release || p.Cmd.To == 1 || p.Cmd.To == 0 {
				t.Fatalf("no longer a voter, it proposed %+v; want a release to a voter", p.Cmd)
			}
			return
		}
	}
	t.Fatal("a master that is no longer a voter kept the group")
}
