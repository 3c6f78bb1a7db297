//go:build unix

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
)

// TestWatchMastersStreamsMatchTheLogAcrossKills checks the promise of
// client.WatchMasters (issue 9, part 3) with lockd processes: three
// streams, each starting on another node, follow the masters while the
// master of a group is SIGKILLed and restarted, three times. Afterwards the
// nodes' logs are read back from their data dirs, and every stream must
// have delivered every master change of every group's log, in order,
// exactly once, with Seq growing by one per change (client.MasterEvent),
// and "no master" between two masters; or said Resync.
func TestWatchMastersStreamsMatchTheLogAcrossKills(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real processes; skipped with -short")
	}
	const groups = 6
	c := startCluster(t, groups, 2*time.Second)
	c.waitServing(60 * time.Second)

	cfg, err := client.LoadConfigFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var streams []*masterStream
	for i := range c.addrs {
		wc := cfg
		wc.Endpoints = append(append([]string(nil), c.addrs[i:]...), c.addrs[:i]...)
		cl, err := client.New(ctx, wc)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ch, err := cl.WatchMasters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, collectMasters(fmt.Sprintf("stream %d", i+1), ch))
	}

	for round := range 3 {
		masters := c.waitServing(60 * time.Second)
		victim := masters[round%groups]
		t.Logf("round %d: SIGKILL node %d, master of groups %v", round+1, victim, groupsOf(masters, victim))
		c.kill(victim - 1)
		c.waitServing(60 * time.Second)
		c.startNode(victim - 1)
		c.waitServing(60 * time.Second)
	}
	want := c.settle(streams, 2*time.Minute)
	cancel()
	for _, s := range streams {
		s.wait()
	}
	c.stopAll()

	truth := c.logMasterChanges()
	for _, s := range streams {
		s.check(t, truth, want)
	}
}

func groupsOf(masters []int, n int) []int {
	var out []int
	for g, m := range masters {
		if m == n {
			out = append(out, g)
		}
	}
	return out
}

// masterStream collects the events of one WatchMasters.
type masterStream struct {
	name string
	mu   sync.Mutex
	evs  []client.MasterEvent
	at   []time.Time // when each event arrived
	done chan struct{}
}

func collectMasters(name string, ch <-chan client.MasterEvent) *masterStream {
	s := &masterStream{name: name, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for ev := range ch {
			s.mu.Lock()
			s.evs = append(s.evs, ev)
			s.at = append(s.at, time.Now())
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *masterStream) wait() { <-s.done }

// lastSeq is the Seq of the last event of each group.
func (s *masterStream) lastSeq(groups int) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, groups)
	for _, ev := range s.evs {
		if int(ev.Group) < groups {
			out[ev.Group] = ev.Seq
		}
	}
	return out
}

// settle waits until every running node reports the same Seq for every
// group, twice in a row, and every stream has reached it; it returns it.
func (c *cluster) settle(streams []*masterStream, timeout time.Duration) []uint64 {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var prev []uint64
	for {
		seqs := c.seqs()
		ok := seqs != nil && fmt.Sprint(seqs) == fmt.Sprint(prev)
		for _, s := range streams {
			ok = ok && fmt.Sprint(s.lastSeq(c.groups)) == fmt.Sprint(seqs)
		}
		if ok {
			return seqs
		}
		if time.Now().After(deadline) {
			for _, s := range streams {
				c.t.Logf("%s: last seq per group %v", s.name, s.lastSeq(c.groups))
			}
			c.t.Fatalf("the streams did not reach the nodes' master-change counts %v within %v", seqs, timeout)
		}
		prev = seqs
		time.Sleep(500 * time.Millisecond)
	}
}

// seqs returns the Seq every running node reports per group, or nil while
// they disagree.
func (c *cluster) seqs() []uint64 {
	var out []uint64
	for i, addr := range c.addrs {
		if c.nodes[i].exited() {
			continue
		}
		resp, err := probeCall(addr, c.tls, wire.Msg{Type: wire.TypeClusterStatus}, 2*time.Second)
		if err != nil || len(resp.Masters) != c.groups {
			return nil
		}
		cur := make([]uint64, c.groups)
		for _, m := range resp.Masters {
			cur[m.Group] = m.Seq
		}
		if out != nil && fmt.Sprint(out) != fmt.Sprint(cur) {
			return nil
		}
		out = cur
	}
	return out
}

// logMasterChanges reads every node's log from its data dir (the nodes are
// stopped) and returns, per group, the master after each master change of
// the longest committed log: change k (Seq k) is element k-1. It derives
// them without package election's Elector: a lease of another holder than
// the log's master is a change, and so is a release that follows its
// holder's own earlier lease of the same incarnation.
func (c *cluster) logMasterChanges() [][]uint32 {
	c.t.Helper()
	logs := make([][]election.LeaseCmd, c.groups)
	for i := range c.nodes {
		st, err := pebblestore.Open(filepath.Join(c.dir, "data", strconv.Itoa(i+1)), pebblestore.Options{})
		if err != nil {
			c.t.Fatalf("open node %d's store: %v", i+1, err)
		}
		for g := range c.groups {
			cmds := leaseCommands(c.t, st, paxos.GroupID(g))
			if len(cmds) > len(logs[g]) {
				logs[g] = cmds
			}
		}
		st.Close()
	}
	out := make([][]uint32, c.groups)
	for g, cmds := range logs {
		var cur election.LeaseCmd
		var master paxos.NodeID
		for _, lc := range cmds {
			if lc.Release {
				if cur.Holder != lc.Holder || cur.Release || cur.Nonce>>32 != lc.Nonce>>32 || uint32(cur.Nonce) >= uint32(lc.Nonce) {
					continue // stale: it ends no lease
				}
				cur, master = lc, 0
				out[g] = append(out[g], 0)
				continue
			}
			cur = lc
			if lc.Holder != master {
				master = lc.Holder
				out[g] = append(out[g], uint32(master))
			}
		}
	}
	return out
}

// leaseCommands returns the lease commands of g's committed log, in order,
// each once.
func leaseCommands(t testing.TB, st *pebblestore.Store, g paxos.GroupID) []election.LeaseCmd {
	t.Helper()
	hs, err := st.HardState(g)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.Entries(g, 0, hs.Commit, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[paxos.CommandID]bool{}
	var out []election.LeaseCmd
	for _, e := range entries {
		for _, cmd := range e.Value.Cmds {
			if len(cmd.Data) == 0 || cmd.Data[0] != 'E' || seen[cmd.ID] {
				continue
			}
			seen[cmd.ID] = true
			lc, err := election.DecodeLeaseCmd(cmd.Data[1:])
			if err != nil {
				t.Fatalf("group %d slot %d: %v", g, e.Slot, err)
			}
			out = append(out, lc)
		}
	}
	return out
}

// check compares the stream with the log's master changes (truth) and the
// counts the nodes agreed on at the end (want).
func (s *masterStream) check(t *testing.T, truth [][]uint32, want []uint64) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	type state struct {
		seen         bool
		epoch, seq   uint64
		node         uint32
		changes, nos int
	}
	st := make([]state, len(truth))
	bad := 0
	fail := func(format string, args ...any) {
		if bad++; bad <= 20 {
			t.Errorf(s.name+": "+format, args...)
		}
	}
	for i, ev := range s.evs {
		g := int(ev.Group)
		if g >= len(truth) {
			fail("event %d: group %d out of range", i, g)
			continue
		}
		p := &st[g]
		master := func(seq uint64) uint32 {
			if seq == 0 {
				return 0
			}
			if seq > uint64(len(truth[g])) {
				fail("event %d: group %d seq %d, the log has %d master changes", i, g, seq, len(truth[g]))
				return 0
			}
			return truth[g][seq-1]
		}
		switch {
		case ev.Resync:
			fail("event %d: group %d: resync (%+v); the nodes keep enough history for this test", i, g, ev)
		case !p.seen:
			// The first event is the group's state when the watch began.
			if ev.Node != 0 && ev.Node != master(ev.Seq) {
				fail("event %d: group %d starts with master %d at seq %d, the log says %d", i, g, ev.Node, ev.Seq, master(ev.Seq))
			}
		case ev.Epoch <= p.epoch:
			fail("event %d: group %d epoch %d after %d: repeated or out of order", i, g, ev.Epoch, p.epoch)
		case ev.Seq == p.seq+1:
			p.changes++
			if m := master(ev.Seq); ev.Node != m {
				fail("event %d: group %d change %d to master %d, the log says %d", i, g, ev.Seq, ev.Node, m)
			}
			if ev.Node != 0 && p.node != 0 {
				fail("event %d: group %d went from master %d to %d without a \"no master\" event between", i, g, p.node, ev.Node)
			}
		case ev.Seq == p.seq:
			// The lease of change seq ran out by the node's count, or was
			// renewed after that.
			if ev.Node != 0 && ev.Node != master(ev.Seq) {
				fail("event %d: group %d seq %d: master %d (%s), but change %d made %d master", i, g, ev.Seq, ev.Node, ev.Cause, ev.Seq, master(ev.Seq))
			}
		default:
			fail("event %d: group %d seq went from %d to %d: changes were skipped without a resync", i, g, p.seq, ev.Seq)
		}
		if ev.Node == 0 {
			p.nos++
		}
		*p = state{seen: true, epoch: ev.Epoch, seq: ev.Seq, node: ev.Node, changes: p.changes, nos: p.nos}
	}
	total := 0
	for g := range st {
		if st[g].seq != want[g] {
			fail("group %d: the stream ended at seq %d, the nodes at %d", g, st[g].seq, want[g])
		}
		total += st[g].changes
	}
	t.Logf("%s: %d events, %d master changes followed across the kills", s.name, len(s.evs), total)
}

// TestSIGTERMHandsGroupsOverBeforeExit checks that a node stopped with
// SIGTERM hands every group it masters over before it exits (issue 9, part
// 5): a stream on another node sees each of them released (not expired) by
// the stopping node, and then a new master. The time without a master is
// logged: a few round trips instead of a lease.
func TestSIGTERMHandsGroupsOverBeforeExit(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real processes; skipped with -short")
	}
	const groups = 6
	c := startCluster(t, groups, 2*time.Second)
	masters := c.waitServing(60 * time.Second)
	victim := masters[0]
	held := groupsOf(masters, victim)

	cfg, err := client.LoadConfigFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Endpoints = nil
	for i, a := range c.addrs {
		if i != victim-1 {
			cfg.Endpoints = append(cfg.Endpoints, a)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := client.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ch, err := cl.WatchMasters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := collectMasters("stream", ch)
	c.settle([]*masterStream{s}, 2*time.Minute)
	s.mu.Lock()
	mark := len(s.evs)
	s.mu.Unlock()

	t.Logf("SIGTERM to node %d, master of groups %v", victim, held)
	c.nodes[victim-1].signal(syscall.SIGTERM)
	if code := c.nodes[victim-1].mustExit(2 * time.Minute); code != 0 {
		t.Errorf("node %d exited %d after SIGTERM:\n%s", victim, code, tail(c.nodes[victim-1].err.String(), 10))
	}
	c.waitServing(60 * time.Second)
	c.settle([]*masterStream{s}, 2*time.Minute)
	cancel()
	s.wait()

	for _, g := range held {
		var evs []client.MasterEvent
		var at []time.Time
		for i := mark; i < len(s.evs); i++ {
			if s.evs[i].Group == uint32(g) {
				evs, at = append(evs, s.evs[i]), append(at, s.at[i])
			}
		}
		if len(evs) < 2 || evs[0].Node != 0 || evs[0].Cause != "released" {
			t.Errorf("group %d (mastered by node %d): after the SIGTERM the stream shows %+v, want a release, then a new master", g, victim, evs)
			continue
		}
		if evs[1].Node == 0 || evs[1].Node == uint32(victim) {
			t.Errorf("group %d: after the release the stream shows %+v, want another master", g, evs[1])
			continue
		}
		t.Logf("group %d: released by node %d, node %d master %v later", g, victim, evs[1].Node, at[1].Sub(at[0]).Round(time.Millisecond))
	}
	for i, p := range c.nodes {
		if i != victim-1 {
			p.signal(syscall.SIGTERM)
			p.mustExit(2 * time.Minute)
		}
	}
}
