package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/internal/testcluster"
	"github.com/lockd/lockd/paxos"
)

// Issue 11 (membership): lockd's operator flow for replacing a node, on
// real QUIC and real pebble, in one process.

// membersRules lets every identity lock and read, and makes the test
// cluster's client identity ("bench-client") admin.
const membersRules = `{"rules": [
  {"name": "all", "effect": "allow", "actions": ["lock", "read"], "identities": ["*"], "prefixes": [""]},
  {"name": "ops-admin", "effect": "allow", "actions": ["admin"], "identities": ["bench-client"], "prefixes": [""]}
]}`

// startMembersCluster starts three nodes with membersRules and snapshots
// every few slots (so that a new node catches up by snapshot, then log).
func startMembersCluster(t *testing.T) *testcluster.Cluster {
	return startMembersClusterWith(t, 3, func(cfg *server.Config) { cfg.SnapshotEvery, cfg.SnapshotMargin = 40, 8 })
}

// startMembersClusterWith starts nodes nodes with membersRules, 2 groups
// and a 1 s lease, their configs changed by tune, and waits for masters.
func startMembersClusterWith(t *testing.T, nodes int, tune func(*server.Config)) *testcluster.Cluster {
	t.Helper()
	rules := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(rules, []byte(membersRules), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.Start(t, testcluster.Options{Nodes: nodes, Groups: 2, Lease: time.Second, Tune: func(cfg *server.Config) {
		cfg.ACLFile = rules
		tune(cfg)
	}})
	c.WaitForMasters(hangGuard)
	return c
}

func newTestClient(t *testing.T, ctx context.Context, c *testcluster.Cluster) *client.Client {
	t.Helper()
	cl, err := client.New(ctx, client.Config{Endpoints: c.Endpoints(), TLS: c.ClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// voters returns group members' voter ids and learner ids.
func voters(gm client.GroupMembers) (vs, ls []uint32) {
	for _, m := range gm.Members {
		if m.Voter {
			vs = append(vs, m.ID)
		} else {
			ls = append(ls, m.ID)
		}
	}
	return vs, ls
}

// TestMembershipReplaceNode is the README's procedure for replacing a
// node: a brand-new node 4 starts with --join and waits; lockctl members
// replace 1 4 ADDR adds it (learner, caught up, voter) to every group and
// then removes node 1. Locks keep working with increasing fencing tokens
// throughout, node 1 stops with ErrRemoved (exit code 8), and restarted on
// its data dir it refuses to start.
func TestMembershipReplaceNode(t *testing.T) {
	c := startMembersCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*hangGuard)
	defer cancel()
	cl := newTestClient(t, ctx, c)

	// Traffic before: enough slots for a snapshot in each group.
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 60 {
		l, err := sess.Acquire(ctx, "m/"+string(rune('a'+i%26)), client.LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = max(last, l.Token())
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}

	i4, err := c.Join()
	if err != nil {
		t.Fatal(err)
	}
	addr4 := c.Node(i4).Addr
	// Waiting to be added: no group lists node 4.
	gms, err := cl.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, gm := range gms {
		if vs, ls := voters(gm); slices.Contains(vs, 4) || slices.Contains(ls, 4) {
			t.Fatalf("group %d lists node 4 before it was added: %+v", gm.Group, gm)
		}
	}

	var steps []client.MemberStep
	learnerShown := 0
	o := client.MemberOptions{Report: func(s client.MemberStep) {
		steps = append(steps, s)
		if s.Step != "added-learner" || s.Master == 0 || c.Server(int(s.Master)-1) == nil {
			return
		}
		// The master's status page shows the learner once the change is
		// chosen (AddMember waits for this callback before it promotes).
		var pg server.PageGroup
		for ctx.Err() == nil {
			ps, err := c.Server(int(s.Master) - 1).PageStatus(ctx)
			if err != nil {
				t.Errorf("status page of node %d: %v", s.Master, err)
				return
			}
			if pg = ps.Groups[s.Group]; len(pg.Learners) > 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !slices.Equal(pg.Voters, []uint32{1, 2, 3}) || !slices.Equal(pg.Learners, []uint32{4}) {
			t.Errorf("group %d on its master's status page, node 4 just added as a learner: voters %v learners %v", s.Group, pg.Voters, pg.Learners)
		}
		learnerShown++
	}}
	if err := cl.AddMember(ctx, 4, addr4, o); err != nil {
		t.Fatalf("add node 4: %v (steps %+v)", err, steps)
	}
	if learnerShown == 0 {
		t.Errorf("no group's status page was read with node 4 as a learner (steps %+v)", steps)
	}
	gms, err = cl.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, gm := range gms {
		if vs, ls := voters(gm); !slices.Equal(vs, []uint32{1, 2, 3, 4}) || len(ls) != 0 || gm.Pending {
			t.Fatalf("group %d after add: voters %v learners %v pending %v; want voters [1 2 3 4] in force", gm.Group, vs, ls, gm.Pending)
		}
	}
	// Idempotent: again, nothing is left to do.
	steps = nil
	if err := cl.AddMember(ctx, 4, addr4, o); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Step != "already-voter" {
			t.Fatalf("second add made a change: %+v", steps)
		}
	}

	exited, exitErr := c.Exited(0)
	if err := cl.RemoveMember(ctx, 1, client.MemberOptions{}); err != nil {
		t.Fatalf("remove node 1: %v", err)
	}
	select {
	case <-exited:
		if err := exitErr(); !errors.Is(err, server.ErrRemoved) {
			t.Fatalf("node 1 stopped with %v, want server.ErrRemoved", err)
		}
	case <-ctx.Done():
		t.Fatal("node 1 was removed from every group but did not stop")
	}

	// Locks keep working, tokens keep growing, on the new voters.
	for i := range 10 {
		l, err := sess.Acquire(ctx, "m/"+string(rune('a'+i)), client.LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Token() <= last {
			t.Fatalf("token %d after the replacement, want above %d", l.Token(), last)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gms, err = cl.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, gm := range gms {
		if vs, _ := voters(gm); !slices.Equal(vs, []uint32{2, 3, 4}) || gm.Master == 1 {
			t.Fatalf("group %d after remove: voters %v master %d; want [2 3 4] and not node 1", gm.Group, vs, gm.Master)
		}
	}

	// Node 1 does not come back on its data dir.
	c.StopNode(0)
	if err := c.Restart(0); !errors.Is(err, server.ErrRemoved) {
		t.Fatalf("restart of the removed node: %v, want server.ErrRemoved", err)
	}
}

// TestMembershipNeedsAdmin: the membership requests need the admin role;
// an identity without it is refused with the access rules' reason, and
// nothing changes.
func TestMembershipNeedsAdmin(t *testing.T) {
	c := startMembersCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	certPEM, keyPEM, err := c.CA().IssueClient("someone")
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := c.ClientTLS()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf.Certificates = []tls.Certificate{cert}
	cl, err := client.New(ctx, client.Config{Endpoints: c.Endpoints(), TLS: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, err = cl.GroupMembers(ctx, 0)
	if !errors.Is(err, client.ErrPermission) || !strings.Contains(err.Error(), "someone") {
		t.Fatalf("members list as a non-admin: %v, want a permission error naming the identity", err)
	}
	err = cl.ChangeMembership(ctx, 0, client.MemberChange{Op: client.ChangeRemove, Node: 3})
	if !errors.Is(err, client.ErrPermission) {
		t.Fatalf("remove as a non-admin: %v, want a permission error", err)
	}
	admin := newTestClient(t, ctx, c)
	gm, err := admin.GroupMembers(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if vs, _ := voters(*gm); !slices.Equal(vs, []uint32{1, 2, 3}) {
		t.Fatalf("voters %v after refused changes, want [1 2 3]", vs)
	}
}

// TestSnapshotFramesOnlyFromIntroducedPeers: a snapshot request from a
// node whose incarnation never said hello and was acknowledged (here an id
// no member has) is dropped, so a stale or refused incarnation cannot read
// a group's state through the snapshot lane, which bypasses the Paxos
// message checks (peers.go, onPeerMessage). The same request from a member
// is served, so the test sees the difference the check makes.
func TestSnapshotFramesOnlyFromIntroducedPeers(t *testing.T) {
	c := startMembersCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cl := newTestClient(t, ctx, c)
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server(0)
	const stranger, member = 9, 2
	var mu sync.Mutex
	sentTo := map[paxos.NodeID]int{}
	server.SetSnapshotHooks(s, 0, func(to paxos.NodeID, _, _ uint64) {
		mu.Lock()
		sentTo[to]++
		mu.Unlock()
	})
	sent := func(to paxos.NodeID) int {
		mu.Lock()
		defer mu.Unlock()
		return sentTo[to]
	}
	// Wait until node 1 sends group 0's snapshot to a member that asks (it
	// has one once 40 slots were applied), adding traffic meanwhile.
	for xfer := uint64(1001); sent(member) == 0; xfer += 2 {
		server.InjectPeerFrame(s, member, server.SnapshotBeginFrame(xfer, 0))
		if sent(member) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("node 1 never served group 0's snapshot to a member")
		}
		l, err := sess.Acquire(ctx, fmt.Sprintf("intro/%d", xfer%16), client.LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	server.InjectPeerFrame(s, stranger, server.SnapshotBeginFrame(7, 0))
	if n := sent(stranger); n > 0 {
		t.Fatalf("node 1 sent %d chunks of group 0's snapshot to node %d, which was never introduced (no hello acknowledged)", n, stranger)
	}
}

// TestJoinRefusesAnExistingMembersID: --join is for a brand-new node id.
// A member's id coming back with --join on an empty data dir is still
// refused by its peers, which know its incarnation (DESIGN.md, durable
// state is never silently lost): only --recover-from-peers or a
// replacement under a new id bring it back.
func TestJoinRefusesAnExistingMembersID(t *testing.T) {
	c := startMembersCluster(t)
	c.StopNode(2)
	empty := t.TempDir()
	if err := c.RestartWith(2, func(cfg *server.Config) { cfg.DataDir, cfg.Join = empty, true }); err != nil {
		t.Fatal(err)
	}
	exited, exitErr := c.Exited(2)
	select {
	case <-exited:
		if err := exitErr(); !errors.Is(err, server.ErrRefused) {
			t.Fatalf("node 3 with --join on an empty data dir stopped with %v, want server.ErrRefused", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("node 3 with --join on an empty data dir was not refused by its peers")
	}
}

// TestJoinTakesFoundingFromCluster: a --join node whose --peers names only
// two of five members (nodes 1 and 2, and itself) catches up from the log,
// not a snapshot, and still replays it from the cluster's founding
// configuration, which a member told it: once promoted it counts the
// quorums of voters 1-6 in every group, as the members do. Built from its
// --peers ({1, 2}), it would count {1, 2, 6}, a majority of which ({1, 6})
// shares no node with a majority of the others ({3, 4, 5}).
func TestJoinTakesFoundingFromCluster(t *testing.T) {
	c := startMembersClusterWith(t, 5, func(cfg *server.Config) {
		cfg.SnapshotEvery = -1 // catch up from the log from slot 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*hangGuard)
	defer cancel()
	cl := newTestClient(t, ctx, c)
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		l, err := sess.Acquire(ctx, fmt.Sprintf("f/%d", i), client.LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}

	i6, err := c.JoinWith([]int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.AddMember(ctx, 6, c.Node(i6).Addr, client.MemberOptions{}); err != nil {
		t.Fatalf("add node 6: %v", err)
	}
	s6 := c.Server(i6)
	if s6 == nil {
		t.Fatal("node 6 does not run after it was added")
	}
	if got := s6.FoundingForTest(); !slices.Equal(got, []paxos.NodeID{1, 2, 3, 4, 5}) {
		t.Fatalf("node 6's founding configuration is %v, want the cluster's [1 2 3 4 5]", got)
	}
	want := []paxos.NodeID{1, 2, 3, 4, 5, 6}
	for g := range paxos.GroupID(2) {
		// Node 6 applies the promotion a little after the master does.
		var got []paxos.NodeID
		for ctx.Err() == nil {
			ms, err := s6.MembershipForTest(ctx, g)
			if err != nil {
				t.Fatal(err)
			}
			if got = paxos.Voters(ms.Latest()); slices.Equal(got, want) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("group %d: node 6 counts voters %v, want %v as the members do", g, got, want)
		}
	}
}

// TestRecoverTakesFoundingFromCluster: a node re-created on an empty data
// dir with --recover-from-peers, whose --peers names only three of the
// five nodes, takes the founding configuration from its peers' answers,
// not from its --peers, and serves its groups again with the cluster's
// five voters.
func TestRecoverTakesFoundingFromCluster(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Nodes: 5, Groups: 2, Lease: time.Second})
	c.WaitForMasters(hangGuard)
	c.StopNode(1)
	peers := map[paxos.NodeID]string{}
	for _, i := range []int{0, 1, 2} {
		peers[paxos.NodeID(i+1)] = c.Node(i).Addr
	}
	if err := c.RestartWith(1, func(cfg *server.Config) {
		cfg.DataDir = filepath.Join(t.TempDir(), "node2-recovered")
		cfg.RecoverFromPeers = true
		cfg.Peers = peers
	}); err != nil {
		t.Fatal(err)
	}
	s2 := c.Server(1)
	if got := s2.FoundingForTest(); !slices.Equal(got, []paxos.NodeID{1, 2, 3, 4, 5}) {
		t.Fatalf("the recovered node's founding configuration is %v, want the cluster's [1 2 3 4 5]", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	for g := range paxos.GroupID(2) {
		ms, err := s2.MembershipForTest(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		if got := paxos.Voters(ms.Latest()); !slices.Equal(got, []paxos.NodeID{1, 2, 3, 4, 5}) {
			t.Fatalf("group %d: the recovered node counts voters %v, want [1 2 3 4 5]", g, got)
		}
	}
}
