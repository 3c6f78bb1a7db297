package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
)

// storeFetcher transfers snapshots between the stores of one process.
type storeFetcher struct {
	mu     *sync.Mutex
	stores map[paxos.NodeID]SnapshotStore
}

func (f storeFetcher) FetchSnapshot(ctx context.Context, from paxos.NodeID, g paxos.GroupID, minSlot uint64) (uint64, []byte, error) {
	f.mu.Lock()
	st := f.stores[from]
	f.mu.Unlock()
	if st == nil {
		return 0, nil, fmt.Errorf("node %d is gone", from)
	}
	slot, data, err := st.LoadSnapshot(g)
	if err == nil && slot < minSlot {
		err = fmt.Errorf("node %d has a snapshot at %d only", from, slot)
	}
	return slot, data, err
}

// rolling is a cluster of replicas on pebble whose members come and go.
type rolling struct {
	t      *testing.T
	groups int
	net    *MemNetwork
	mu     sync.Mutex
	reps   map[paxos.NodeID]*Replica
	sms    map[paxos.NodeID]*snapCounter
	stores map[paxos.NodeID]SnapshotStore
	stop   map[paxos.NodeID]func()
}

func (c *rolling) start(id paxos.NodeID) {
	t := c.t
	st, err := pebblestore.Open(filepath.Join(t.TempDir(), fmt.Sprint(id)), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sm := &snapCounter{}
	r, err := New(Config{
		Core:          paxos.Config{ID: id, Nodes: []paxos.NodeID{1, 2, 3}, Groups: c.groups, AutoCampaign: true, ElectionTicks: 10, MaxFetchEntries: 16},
		Tick:          2 * time.Millisecond,
		Store:         st,
		Transport:     c.net,
		StateMachine:  sm,
		SnapshotEvery: 40, SnapshotMargin: 8,
		Fetcher: storeFetcher{mu: &c.mu, stores: c.stores},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("replica %d stopped: %v", id, err)
		}
	}()
	c.mu.Lock()
	c.reps[id], c.sms[id], c.stores[id] = r, sm, st
	c.stop[id] = func() {
		cancel()
		<-done
		st.Close()
	}
	c.mu.Unlock()
	c.net.Register(id, r)
}

func (c *rolling) retire(id paxos.NodeID) {
	c.net.Register(id, nil)
	c.mu.Lock()
	stop := c.stop[id]
	delete(c.reps, id)
	delete(c.stores, id)
	delete(c.stop, id)
	c.mu.Unlock()
	stop()
}

func (c *rolling) live() map[paxos.NodeID]*Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[paxos.NodeID]*Replica{}
	for id, r := range c.reps {
		out[id] = r
	}
	return out
}

// propose follows redirects over the live replicas until cmd succeeds.
func (c *rolling) propose(ctx context.Context, g paxos.GroupID, cmd paxos.Command) error {
	var target paxos.NodeID
	for ctx.Err() == nil {
		reps := c.live()
		r := reps[target]
		if r == nil {
			for id, x := range reps {
				target, r = id, x
				break
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := r.Propose(cctx, g, cmd)
		cancel()
		if err == nil {
			return nil
		}
		if hint, ok := paxos.IsNotMaster(err); ok && hint != 0 && reps[hint] != nil && hint != target {
			target = hint
			continue
		}
		target = 0 // outcome unknown, overloaded, stopped: retry the same id elsewhere
		time.Sleep(5 * time.Millisecond)
	}
	return ctx.Err()
}

// change makes c in group g and waits until it is in force on the master.
func (c *rolling) change(ctx context.Context, g paxos.GroupID, ch paxos.Change) {
	t := c.t
	applied := func(ms []paxos.Member) bool {
		for _, m := range ms {
			if m.ID == ch.Node {
				return ch.Op == paxos.AddLearner || (ch.Op == paxos.Promote && m.Voter)
			}
		}
		return ch.Op == paxos.Remove
	}
	var lastErr error
	for ctx.Err() == nil {
		for _, r := range c.live() {
			st, err := r.Status(ctx, g)
			if err != nil || st.Role != "master" {
				continue
			}
			if ms, err := r.Membership(ctx, g); err == nil && applied(ms.At(st.Applied)) {
				return
			}
			if err := r.ProposeChange(ctx, g, ch); err != nil && !errors.Is(err, paxos.ErrChangePending) {
				lastErr = err
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("group %d: %s not in force: %v (last refusal: %v)", g, ch, ctx.Err(), lastErr)
}

// TestRollingReplacement replaces every node of a 3-node cluster, one by
// one, under steady traffic on real pebble stores with snapshots on: each
// new node joins as a learner (catching up through a snapshot, then the
// log), is promoted, and the node it replaces is removed, sees that it was
// removed, and stops. Every command that succeeded is applied exactly once
// on every final node, and no command was lost.
func TestRollingReplacement(t *testing.T) {
	const groups = 2
	c := &rolling{t: t, groups: groups, net: NewMemNetwork(), reps: map[paxos.NodeID]*Replica{},
		sms: map[paxos.NodeID]*snapCounter{}, stores: map[paxos.NodeID]SnapshotStore{}, stop: map[paxos.NodeID]func(){}}
	for id := paxos.NodeID(1); id <= 3; id++ {
		c.start(id)
	}
	defer func() {
		for id := range c.live() {
			c.retire(id)
		}
	}()
	const hangGuard = 2 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()

	// Steady traffic: one writer per group, each command adds 1 to its
	// group's sum and is retried with its id until it succeeds.
	var sent [groups]atomic.Uint64
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for g := range paxos.GroupID(groups) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); tctx.Err() == nil; seq++ {
				cmd := paxos.Command{ID: paxos.CommandID{Client: 100 + uint64(g), Seq: seq}, Ack: seq, Data: []byte("x")}
				if err := c.propose(tctx, g, cmd); err != nil {
					return // stopped mid-command: the final sum may or may not hold it
				}
				sent[g].Store(seq)
			}
		}()
	}
	for old := paxos.NodeID(1); old <= 3; old++ {
		time.Sleep(50 * time.Millisecond) // let traffic run between steps
		nu := old + 3
		began := time.Now()
		c.start(nu)
		if st, err := c.live()[nu].Status(ctx, 0); err != nil || st.Removed || st.Voter {
			t.Fatalf("node %d waiting to join: %+v, %v; want neither removed nor a voter", nu, st, err)
		}
		for g := range paxos.GroupID(groups) {
			c.change(ctx, g, paxos.Change{Op: paxos.AddLearner, Node: nu, Addr: fmt.Sprintf("mem:%d", nu)})
			c.change(ctx, g, paxos.Change{Op: paxos.Promote, Node: nu})
			c.change(ctx, g, paxos.Change{Op: paxos.Remove, Node: old})
		}
		// The removed node learns it in every group, then stops.
		r := c.live()[old]
		for g := range paxos.GroupID(groups) {
			for {
				st, err := r.Status(ctx, g)
				if err != nil {
					t.Fatalf("node %d group %d: %v", old, g, err)
				}
				if st.Removed {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		c.retire(old)
		t.Logf("node %d replaced by node %d in %v, three changes in each of %d groups (sums so far: %d, %d)",
			old, nu, time.Since(began).Round(time.Millisecond), groups, sent[0].Load(), sent[1].Load())
	}
	stopTraffic()
	wg.Wait()

	// A last command per group, then every final node must hold the same
	// sum: every command acknowledged, plus possibly the one in flight when
	// traffic stopped, plus the last one.
	for g := range paxos.GroupID(groups) {
		if err := c.propose(ctx, g, paxos.Command{ID: paxos.CommandID{Client: 200 + uint64(g), Seq: 1}, Ack: 1, Data: []byte("x")}); err != nil {
			t.Fatalf("group %d: last command: %v", g, err)
		}
		// Every final node converges on one sum: the acknowledged commands,
		// the last one, and the one in flight when traffic stopped if it
		// was chosen. Lost or doubly applied commands never converge there.
		var sums []uint64
		for {
			sums = sums[:0]
			for id := range c.live() {
				c.mu.Lock()
				sums = append(sums, c.sms[id].sum(g))
				c.mu.Unlock()
			}
			want := sent[g].Load() + 1
			same := true
			for _, s := range sums {
				if s != sums[0] {
					same = false
				}
				if s > want+1 {
					t.Fatalf("group %d: sums %v, want at most %d (a command applied twice)", g, sums, want+1)
				}
			}
			if same && sums[0] >= want {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("group %d: sums %v, want all equal and %d or %d (commands lost)", g, sums, want, want+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
		ms, err := c.live()[4].Membership(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("group %d: %d commands, membership %s", g, sums[0], ms)
		if got := paxos.Voters(ms.Latest()); fmt.Sprint(got) != "[4 5 6]" {
			t.Fatalf("group %d: voters %v, want [4 5 6]", g, got)
		}
	}
}
