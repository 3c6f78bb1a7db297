package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// Membership (issue 11). Every group's configuration lives in its log
// (paxos/membership.go); this file makes the rest of the node follow it:
//
//   - Addresses: a change that adds a node carries its address. Once such a
//     change is applied in any group, the node becomes a peer of the mesh
//     (quicnet.AddPeer), and the address is kept in the data dir's member
//     file (memberfile.go), so a restart knows it without --peers. Where
//     the log and --peers disagree on a node's address, the log wins: a
//     node's address changes only by replacing it under a new id.
//   - Voters: the election ranks, prefers and counts the majority-up check
//     over each group's voters in force (election.Elector.SetVoters); a
//     learner or a node waiting to join never campaigns.
//   - Snapshot transfers and hellos (incarnations) go to every node known
//     as a member of some group, not to a static list.
//   - Removal: once no group's newest configuration lists this node, every
//     such configuration is in force, and some group saw this node as a
//     member (paxos.GroupStatus.Removed), the node records that it was
//     removed (member file, before anything else) and Run returns
//     ErrRemoved (lockd run exits with code 8). A restarted removed node
//     finds the record and stops at once: it never comes back as a voter.
//
// The view is refreshed by polling the replica (memberPoll) rather than
// from Apply, because a change comes into force paxos.ChangeDelay slots
// after it is applied, which only the core's commit index tells (and the
// applier does not hand changes to the state machine). A poll reads every
// group whose newest configuration is not yet in force, and memberScanBatch
// others in turn, so a node of many groups does not query all of them every
// time: a change shows within groups/memberScanBatch polls.

// memberPoll is how often the view is read from the replica;
// memberScanBatch how many settled groups one poll reads.
const (
	memberPoll      = 200 * time.Millisecond
	memberScanBatch = 16
)

// memberScan is the last read of every group, owned by watchMembers.
type memberScan struct {
	views []groupMembers
	read  []bool // views[g] holds a read
	next  int    // the next settled group to read
	// gone counts the polls in a row that found this node in no group
	// while it was a member once (see refreshMembers).
	gone int
}

func newMemberScan(groups int) *memberScan {
	return &memberScan{views: make([]groupMembers, groups), read: make([]bool, groups)}
}

// due returns the groups to read now: those never read or not settled
// (a configuration not yet in force), and the next memberScanBatch others.
func (sc *memberScan) due() []int {
	var out []int
	for g, v := range sc.views {
		if !sc.read[g] || v.pending() {
			out = append(out, g)
		}
	}
	for i := 0; i < min(memberScanBatch, len(sc.views)); i++ {
		g := (sc.next + i) % len(sc.views)
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	sc.next = (sc.next + memberScanBatch) % len(sc.views)
	return out
}

// ErrRemoved is returned by Run when this node was removed from the
// cluster (lockctl members remove / replace), and by New when the data dir
// records that it was. lockd run exits with code 8 on it, and the systemd
// unit does not restart it.
var ErrRemoved = errors.New("this node was removed from the cluster by a membership change (lockctl members remove or replace); it does not serve again: " +
	"to bring the machine back, start it as a new node (new id, empty data dir, lockd run --join) and add it with lockctl members add")

// memberView is what this node knows of the cluster's members. mu guards
// every field; it is never held while calling out.
type memberView struct {
	mu sync.Mutex
	// addrs is every node's address: --peers, then the member file, then
	// the logs (the later wins).
	addrs map[paxos.NodeID]string
	// members are the ids of the newest configuration of any group, with
	// this node; nil until the first read of the replica.
	members []paxos.NodeID
	// member: some group's newest configuration lists this node.
	member bool
	// removed is closed once this node has recorded its removal.
	removed     chan struct{}
	removedOnce sync.Once
}

func newMemberView(peers map[paxos.NodeID]string, stored map[paxos.NodeID]string) *memberView {
	v := &memberView{addrs: maps.Clone(peers), removed: make(chan struct{})}
	maps.Copy(v.addrs, stored)
	return v
}

// addr returns node id's address, or "" when none is known.
func (s *Server) addr(id paxos.NodeID) string {
	s.mv.mu.Lock()
	defer s.mv.mu.Unlock()
	return s.mv.addrs[id]
}

// nodeIDs returns the cluster's members as this node knows them: every
// node of some group's newest configuration, and itself. Before the
// replica was first read, the nodes of --peers and the member file.
func (s *Server) nodeIDs() []paxos.NodeID {
	if s.mv == nil {
		return slices.Sorted(maps.Keys(s.cfg.Peers))
	}
	s.mv.mu.Lock()
	defer s.mv.mu.Unlock()
	if s.mv.members == nil {
		return slices.Sorted(maps.Keys(s.mv.addrs))
	}
	return slices.Clone(s.mv.members)
}

// groupMembers is one group's membership as refreshMembers reads it.
type groupMembers struct {
	ms paxos.Membership
	st paxos.GroupStatus
}

// pending reports whether the group's newest configuration is not yet in
// force by the commit index read with it.
func (v groupMembers) pending() bool {
	return len(v.ms.Epochs) > 0 && v.ms.Epochs[len(v.ms.Epochs)-1].From > v.st.Commit
}

// refreshMembers reads every group's membership and follows it: new peers,
// voters in force, snapshot peers, and this node's removal. It reports
// whether this node is removed.
func (s *Server) refreshMembers(ctx context.Context, sc *memberScan) (removed bool, err error) {
	for _, g := range sc.due() {
		gid := paxos.GroupID(g)
		var v groupMembers
		if v.st, err = s.replica.Status(ctx, gid); err != nil {
			return false, err
		}
		if v.ms, err = s.replica.Membership(ctx, gid); err != nil {
			return false, err
		}
		sc.views[g], sc.read[g] = v, true
	}
	views := sc.views
	learned := map[paxos.NodeID]string{}
	var members []paxos.NodeID
	inAny, sawRemoved, pending := false, false, false
	for g, v := range views {
		pending = pending || v.pending()
		for _, e := range v.ms.Epochs {
			for _, m := range e.Members {
				if m.Addr != "" {
					learned[m.ID] = m.Addr
				}
			}
		}
		latest := v.ms.Latest()
		for _, m := range latest {
			if !slices.Contains(members, m.ID) {
				members = append(members, m.ID)
			}
			if m.ID == s.cfg.ID {
				inAny = true
			}
		}
		if v.st.Removed {
			sawRemoved = true
		}
		if voters := paxos.Voters(v.ms.At(v.st.Commit)); len(voters) > 0 {
			s.elector.SetVoters(paxos.GroupID(g), voters)
		}
	}
	if !slices.Contains(members, s.cfg.ID) {
		members = append(members, s.cfg.ID)
	}
	slices.Sort(members)

	s.mv.mu.Lock()
	var fresh []paxos.NodeID
	for id, a := range learned {
		if s.mv.addrs[id] != a {
			s.mv.addrs[id] = a
			fresh = append(fresh, id)
		}
	}
	changed := !slices.Equal(s.mv.members, members)
	s.mv.members = members
	s.mv.member = inAny
	addrs := maps.Clone(s.mv.addrs)
	s.mv.mu.Unlock()

	for _, id := range fresh {
		if id == s.cfg.ID {
			continue
		}
		if err := s.qnode.AddPeer(quicnet.NodeID(id), addrs[id]); err != nil {
			s.warn.Warn(s.log, "add-peer", "cannot add a peer the log names; check --peers against lockctl members list", "peer", id, "addr", addrs[id], "err", err)
			continue
		}
		s.obs.addPeer(id)
		s.log.Info("new peer from a membership change", "peer", id, "addr", addrs[id])
	}
	s.mfMu.Lock()
	wasMember := s.mf.Member
	s.mfMu.Unlock()
	if len(fresh) > 0 || (inAny && !wasMember) {
		if err := s.saveMemberFile(addrs, inAny, false); err != nil {
			s.warn.Warn(s.log, "member-file", "cannot record the members' addresses; a restart needs them in --peers", "err", err)
		}
	}
	if changed {
		s.snap.setPeers(members)
		s.log.Info("cluster members", "members", members)
	}
	// Removed: no group lists this node any more, and either the core saw
	// it removed (it was a member by its own log) or the node was a member
	// once (the member file says so: a node that installed a snapshot
	// taken after its removal no longer knows it from its log), and no
	// group has a configuration still to come into force.
	if inAny || pending || !(sawRemoved || wasMember) {
		sc.gone = 0
		return false, nil
	}
	if sc.gone++; !sawRemoved && sc.gone < 2 {
		return false, nil // the member file alone says so: make sure on the next poll
	}
	// Record it before anything else, so that a restart cannot vote again.
	if err := s.saveMemberFile(addrs, false, true); err != nil {
		return false, err
	}
	return true, nil
}

// watchMembers refreshes the member view every memberPoll until ctx ends
// or this node is removed; then it closes mv.removed.
func (s *Server) watchMembers(ctx context.Context) {
	t := time.NewTicker(memberPoll)
	defer t.Stop()
	sc := newMemberScan(s.cfg.Groups)
	for {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		removed, err := s.refreshMembers(qctx, sc)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.warn.Warn(s.log, "member-refresh", "cannot read the groups' memberships", "err", err)
		}
		if removed {
			s.log.Error("this node was removed from the cluster: every group's configuration in force leaves it out; stopping (exit code 8)")
			s.mv.removedOnce.Do(func() { close(s.mv.removed) })
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// joinWaitLog is how often a node that waits to be added says so.
const joinWaitLog = 10 * time.Second

// awaitFounding waits until a member tells this node, on an empty data dir
// that enters a running cluster, the cluster's founding configuration
// (incarnation.go), and records it in the member file: the node's groups
// replay the log from it. --peers only says where members are: a --peers
// that leaves members out, or names nodes that never were, cannot change
// the quorums this node counts. Members dial a --join node once lockctl
// members add names it, so until then it waits and says so.
func (s *Server) awaitFounding(ctx context.Context) error {
	say := func() {
		if s.cfg.Join || s.mf.Joined {
			s.log.Warn("waiting to be added to the cluster; run: lockctl members add ID ADDR (or members replace OLD ID ADDR)",
				"id", s.cfg.ID, "addr", s.cfg.Listen)
		} else {
			s.log.Warn("waiting for a member of the cluster to introduce itself", "peers", fmt.Sprint(slices.Sorted(maps.Keys(s.cfg.Peers))))
		}
	}
	say()
	t := time.NewTicker(joinWaitLog)
	defer t.Stop()
	for {
		select {
		case <-s.inc.toldc:
			ids, by := s.inc.toldFounding()
			if err := s.setInitial(ids); err != nil {
				return err
			}
			s.inc.setFounding(ids)
			s.log.Info("a member told this node the cluster's founding configuration; its groups replay the log from it",
				"member", by, "founding", fmt.Sprint(ids))
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting to hear from a member of the cluster: %w", ctx.Err())
		case <-t.C:
			say()
		}
	}
}

// waitToJoin logs, until some group lists this node (lockd run --join),
// that it waits to be added and what the operator must run. Meanwhile the
// node serves no group and votes nowhere: its peers do not even connect to
// it until a change names its address.
func (s *Server) waitToJoin(ctx context.Context) {
	t := time.NewTicker(memberPoll)
	defer t.Stop()
	var said time.Time
	for {
		s.mv.mu.Lock()
		member := s.mv.member
		s.mv.mu.Unlock()
		if member {
			s.log.Info("added to the cluster: catching up as a learner (snapshot, then log); it votes once promoted")
			return
		}
		if time.Since(said) >= joinWaitLog {
			said = time.Now()
			s.log.Warn("waiting to be added to the cluster; run: lockctl members add ID ADDR (or members replace OLD ID ADDR)",
				"id", s.cfg.ID, "addr", s.cfg.Listen)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
