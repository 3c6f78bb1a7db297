package client

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/internal/wire"
)

// A running client follows membership changes: configured with nodes 1-3
// alone, it goes on working, on the same session, while every node is
// replaced (1 by 4, 2 by 5, 3 by 6, the README's procedure: lockd run
// --join, then AddMember and RemoveMember), and its map of the cluster ends
// with exactly the new nodes. Before, it learned the members from its
// first Hello only and kept the configured endpoints, so once nodes 1-3
// were gone it knew no node of the cluster (the e2e test's worker on the
// first three addresses lost its session after the last replacement).
func TestClientFollowsRollingReplacement(t *testing.T) {
	if testing.Short() {
		t.Skip("six in-process nodes and three membership changes; skipped with -short")
	}
	// Membership changes need the admin role, which needs a rules file.
	rules := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(rules, []byte(`{"rules": [{"name": "all", "effect": "allow",
		"actions": ["lock", "read", "admin"], "identities": ["*"], "prefixes": [""]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	lc, err := localcluster.Start(localcluster.Options{Nodes: 3, Groups: 4, Lease: time.Second, Dir: t.TempDir(),
		Logger: testLogger(), Tune: func(c *server.Config) { c.ACLFile = rules; c.ExpiryInterval = 20 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	tc := &testCluster{t: t, lc: lc, ca: lc.CA(), addrs: lc.Endpoints()}
	cl := tc.client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	// A TTL well above a failover on a busy machine: with 10s, under -race
	// on a loaded machine, the session once ran out during a replacement.
	sess, err := cl.NewSession(ctx, SessionOptions{TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// One name per group, and one lock held throughout.
	names := make([]string, 4)
	for i, left := 0, 4; left > 0; i++ {
		n := fmt.Sprintf("follow/%d", i)
		if g := wire.GroupOf(n, 4); names[g] == "" {
			names[g] = n
			left--
		}
	}
	held, err := sess.Acquire(ctx, "follow/held", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ops := func(phase string) {
		t.Helper()
		for _, n := range names {
			lk, err := sess.Acquire(ctx, n, LockOptions{})
			if err != nil {
				t.Fatalf("%s: acquire %s: %v (the client knows %v)", phase, n, err, cl.route.all())
			}
			if err := lk.Release(ctx); err != nil {
				t.Fatalf("%s: release %s: %v", phase, n, err)
			}
		}
	}
	ops("before the replacements")

	live := map[int]string{1: tc.addrs[0], 2: tc.addrs[1], 3: tc.addrs[2]}
	for _, old := range []int{1, 2, 3} {
		i, err := tc.lc.Join()
		if err != nil {
			t.Fatal(err)
		}
		id, addr := i+1, tc.lc.Node(i).Addr
		live[id] = addr
		// The operator's client knows the cluster as it is now.
		cfg := tc.config()
		cfg.Endpoints = slices.Sorted(maps.Values(live))
		admin, err := New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.AddMember(ctx, uint32(id), addr, MemberOptions{}); err != nil {
			t.Fatalf("add node %d: %v", id, err)
		}
		exited, _ := tc.lc.Exited(old - 1)
		if err := admin.RemoveMember(ctx, uint32(old), MemberOptions{}); err != nil {
			t.Fatalf("remove node %d: %v", old, err)
		}
		admin.Close()
		select {
		case <-exited:
		case <-ctx.Done():
			t.Fatalf("node %d was removed but did not stop", old)
		}
		delete(live, old)
		phase := fmt.Sprintf("after replacing %d by %d", old, id)
		ops(phase)
		want := slices.Sorted(maps.Values(live))
		waitFor(t, 10*time.Second, phase+": the client's nodes are the members "+fmt.Sprint(want), func() bool {
			return slices.Equal(cl.route.all(), want)
		})
		if err := sess.Err(); err != nil {
			t.Fatalf("%s: the session ended: %v", phase, err)
		}
		t.Logf("%s: the client knows %v", phase, cl.route.all())
	}
	select {
	case <-held.Lost():
		t.Fatalf("the lock held throughout was lost: %v", sess.Err())
	default:
	}
	if err := held.Release(ctx); err != nil {
		t.Fatalf("release the lock held throughout: %v", err)
	}
	if err := sess.Close(ctx); err != nil {
		t.Fatalf("close the session: %v", err)
	}
}

// The router's rules for membership (see router): a member list replaces
// the nodes, the endpoints stand in only before the first list, a hint
// naming a new node adds it and asks for a fresh list, a failed member asks
// for one, and a refresh that no member answers goes to every address ever
// known.
func TestRouterFollowsMembers(t *testing.T) {
	r := newRouter([]string{"e:1", "a:1"})
	r.setGroups(2)
	if got := r.all(); !slices.Equal(got, []string{"a:1", "e:1"}) {
		t.Fatalf("before any list: %v, want the endpoints", got)
	}
	wanted := func() bool {
		select {
		case <-r.refresh:
			return true
		default:
			return false
		}
	}
	r.learnStatus(&wire.Msg{Members: []wire.MemberItem{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "c:1"}}})
	if got := r.all(); !slices.Equal(got, []string{"a:1", "b:1", "c:1"}) {
		t.Fatalf("after a list: %v, want its members alone", got)
	}
	if wanted() {
		t.Fatal("a member list asked for another")
	}
	// Node 1 is replaced by 4: a hint names 4, then a list without 1.
	r.learnHint(0, 4, "d:1")
	if got := r.all(); !slices.Equal(got, []string{"a:1", "b:1", "c:1", "d:1"}) {
		t.Fatalf("after a hint naming node 4: %v", got)
	}
	if !wanted() {
		t.Fatal("a hint naming a new node did not ask for the member list")
	}
	if r.learnHint(1, 4, "d:1"); wanted() {
		t.Fatal("a hint naming a known node asked for the member list")
	}
	r.learnMaster(wire.MasterItem{Group: 1, Epoch: 9, Master: 5, Addr: "f:1"})
	if !wanted() || !slices.Contains(r.all(), "f:1") {
		t.Fatalf("a master change naming node 5 at f:1: nodes %v", r.all())
	}
	r.learnStatus(&wire.Msg{Members: []wire.MemberItem{{ID: 2, Addr: "b:1"}, {ID: 3, Addr: "c:1"}, {ID: 4, Addr: "d:1"}}})
	if got := r.all(); !slices.Equal(got, []string{"b:1", "c:1", "d:1"}) {
		t.Fatalf("node 1 left: %v, want it forgotten", got)
	}
	for i := 0; i < 6; i++ {
		if got := r.pick(-1, ""); got == "a:1" || got == "e:1" {
			t.Fatalf("pick returned %s, which is no member", got)
		}
	}
	// A member fails: maybe it left.
	if r.markDown("c:1"); !wanted() {
		t.Fatal("a failed member did not ask for the member list")
	}
	if r.markDown("a:1"); wanted() {
		t.Fatal("a failed former member asked for the member list")
	}
	up, rest := r.refreshTargets()
	slices.Sort(up)
	if !slices.Equal(up, []string{"b:1", "d:1"}) || !slices.Equal(rest, []string{"a:1", "c:1", "e:1", "f:1"}) {
		t.Fatalf("refresh targets: up %v, rest %v; want the live members, then every other address ever known", up, rest)
	}
}
