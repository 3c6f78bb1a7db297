package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// counter is a state machine that sums the commands' values per group.
type counter struct {
	mu   sync.Mutex
	sums map[paxos.GroupID]uint64
}

func (c *counter) Apply(g paxos.GroupID, slot uint64, index int, cmd *paxos.Command) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sums == nil {
		c.sums = map[paxos.GroupID]uint64{}
	}
	c.sums[g] += uint64(len(cmd.Data))
	return binary.AppendUvarint(nil, c.sums[g])
}

type cluster struct {
	net      *MemNetwork
	replicas []*Replica
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func startCluster(t *testing.T, groups int, stores func(id paxos.NodeID) Store) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &cluster{net: NewMemNetwork(), cancel: cancel}
	ids := []paxos.NodeID{1, 2, 3}
	for _, id := range ids {
		r, err := New(Config{
			Core:         paxos.Config{ID: id, Nodes: ids, Groups: groups, AutoCampaign: true, ElectionTicks: 10},
			Tick:         2 * time.Millisecond,
			Store:        stores(id),
			Transport:    c.net,
			StateMachine: &counter{},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.net.Register(id, r)
		c.replicas = append(c.replicas, r)
	}
	for _, r := range c.replicas {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := r.Run(ctx); err != nil {
				t.Errorf("replica stopped: %v", err)
			}
		}()
	}
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) stop() {
	c.cancel()
	c.wg.Wait()
}

// propose follows redirects until the command succeeds or ctx ends.
func (c *cluster) propose(ctx context.Context, g paxos.GroupID, cmd paxos.Command) (Result, error) {
	target := 0
	for i := 0; i < 200; i++ {
		res, err := c.replicas[target].Propose(ctx, g, cmd)
		if hint, ok := paxos.IsNotMaster(err); ok {
			if hint != 0 {
				target = int(hint - 1)
			} else {
				target = (target + 1) % len(c.replicas)
			}
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return res, ctx.Err()
			}
			continue
		}
		return res, err
	}
	return Result{}, errors.New("no master found after 200 redirects")
}

func memStores(paxos.NodeID) Store { return paxos.NewMemoryStorage() }

func TestProposeSucceedsOnlyWithOwnSlot(t *testing.T) {
	c := startCluster(t, 4, memStores)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := map[paxos.GroupID]map[uint64]bool{}
	for seq := uint64(1); seq <= 40; seq++ {
		g := paxos.GroupID(seq % 4)
		res, err := c.propose(ctx, g, paxos.Command{ID: paxos.CommandID{Client: 7, Seq: seq}, Ack: seq, Data: []byte("x")})
		if err != nil {
			t.Fatalf("propose %d: %v", seq, err)
		}
		if res.Group != g || res.Duplicate {
			t.Fatalf("propose %d: result %+v", seq, res)
		}
		if seen[g] == nil {
			seen[g] = map[uint64]bool{}
		}
		if seen[g][res.Slot] {
			t.Fatalf("two commands of one client reported the same slot %d in group %d", res.Slot, g)
		}
		seen[g][res.Slot] = true
	}
}

func TestRetryWithSameIDIsAppliedOnce(t *testing.T) {
	c := startCluster(t, 1, memStores)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := paxos.Command{ID: paxos.CommandID{Client: 9, Seq: 1}, Ack: 1, Data: []byte("abc")}
	first, err := c.propose(ctx, 0, cmd)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.propose(ctx, 0, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Slot != first.Slot || string(again.Value) != string(first.Value) {
		t.Fatalf("retry: got %+v, want a duplicate of %+v", again, first)
	}
}

func TestIsolatedMasterReportsOutcomeUnknown(t *testing.T) {
	c := startCluster(t, 1, memStores)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.propose(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: 1, Seq: 1}, Data: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.replicas[0].Status(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := st.Master
	if m == 0 {
		t.Fatalf("no master after a successful proposal (slot %d)", res.Slot)
	}
	c.net.Isolate(m, true)
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	_, err = c.replicas[m-1].Propose(short, 0, paxos.Command{ID: paxos.CommandID{Client: 1, Seq: 2}, Data: []byte("b")})
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("isolated master: got %v, want ErrOutcomeUnknown", err)
	}
	// The others elect a new master and the same command id, retried there,
	// succeeds exactly once.
	c.net.Isolate(m, false)
	res2, err := c.propose(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: 1, Seq: 2}, Data: []byte("b")})
	if err != nil {
		for _, r := range c.replicas {
			st, _ := r.Status(context.Background(), 0)
			t.Logf("%+v", st)
		}
		t.Fatal(err)
	}
	if res2.Slot <= res.Slot {
		t.Fatalf("second command at slot %d, first at %d", res2.Slot, res.Slot)
	}
}

// TestActivityWaitsOnlyForBusyGroups: the adaptive group-commit wait counts
// as missing only the groups that had a synced write within the window and
// have nothing in the batch; one busy group never waits for itself.
func TestActivityWaitsOnlyForBusyGroups(t *testing.T) {
	a := newActivity(4, 2*time.Millisecond)
	t0 := time.Unix(100, 0)
	batch := func(sync bool, groups ...paxos.GroupID) []paxos.Ready {
		rd := paxos.Ready{MustSync: sync}
		for _, g := range groups {
			rd.Persist = append(rd.Persist, paxos.GroupWrite{Group: g})
		}
		return []paxos.Ready{rd}
	}
	if n := a.missing(batch(true, 0), t0); n != 0 {
		t.Fatalf("a fresh node waits for %d groups, want 0", n)
	}
	a.record(batch(true, 0), t0)
	if n := a.missing(batch(true, 0), t0.Add(time.Millisecond)); n != 0 {
		t.Fatalf("one busy group waits for %d groups, want 0", n)
	}
	a.record(batch(true, 1, 2), t0.Add(time.Millisecond))
	a.record(batch(false, 3), t0.Add(time.Millisecond)) // no sync: not busy
	if n := a.missing(batch(true, 0), t0.Add(1500*time.Microsecond)); n != 2 {
		t.Fatalf("group 0 alone waits for %d groups, want 2 (groups 1 and 2 wrote 0.5ms ago)", n)
	}
	if n := a.missing(batch(true, 0, 1, 2), t0.Add(1500*time.Microsecond)); n != 0 {
		t.Fatalf("a batch with every busy group waits for %d, want 0", n)
	}
	// The same, one Ready at a time as they reach the persister.
	a.missing(batch(true, 0), t0.Add(1500*time.Microsecond))
	if n := a.add(&batch(true, 2)[0]); n != 1 {
		t.Fatalf("after group 2 arrived the batch lacks %d groups, want 1 (group 1)", n)
	}
	if n := a.add(&batch(true, 2, 1)[0]); n != 0 {
		t.Fatalf("after groups 2 and 1 arrived the batch lacks %d groups, want 0", n)
	}
	if n := a.missing(batch(true, 0), t0.Add(4*time.Millisecond)); n != 0 {
		t.Fatalf("groups idle for longer than the window are waited for (%d), want 0", n)
	}
}

// TestProposeAheadWhileOthersQueue: a command proposed ahead on the master
// takes effect alongside a stream of ordinary ones, once, with its own
// result; the ordinary ones all take effect too.
func TestProposeAheadWhileOthersQueue(t *testing.T) {
	c := startCluster(t, 1, memStores)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.propose(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: 1, Seq: 1}, Ack: 1, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var master *Replica
	for _, r := range c.replicas {
		if st, err := r.Status(ctx, 0); err == nil && st.Role == "master" {
			master = r
		}
	}
	if master == nil {
		t.Fatal("no master after a command was chosen")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := uint64(0); i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := master.Propose(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: 100 + i, Seq: 1}, Ack: 1, Data: []byte("y")})
			errs <- err
		}()
	}
	res, err := master.ProposeAhead(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: 2, Seq: 1}, Ack: 1, Data: []byte("zz")})
	if err != nil || res.Group != 0 || res.Duplicate {
		t.Fatalf("ProposeAhead: %+v, %v", res, err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("an ordinary proposal beside it: %v", err)
		}
	}
	again, err := master.ProposeAhead(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: 2, Seq: 1}, Ack: 1, Data: []byte("zz")})
	if err != nil || !again.Duplicate || again.Slot != res.Slot {
		t.Fatalf("the same id proposed ahead again: %+v, %v; want a duplicate of slot %d", again, err, res.Slot)
	}
}
