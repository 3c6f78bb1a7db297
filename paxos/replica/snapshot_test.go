package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// snapCounter is counter with snapshots.
type snapCounter struct{ counter }

func (c *snapCounter) SnapshotGroup(g paxos.GroupID) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return binary.AppendUvarint([]byte("sum"), c.sums[g]), nil
}

func (c *snapCounter) RestoreGroup(g paxos.GroupID, data []byte) error {
	if !bytes.HasPrefix(data, []byte("sum")) {
		return errors.New("not a counter snapshot")
	}
	v, n := binary.Uvarint(data[3:])
	if n <= 0 || n != len(data)-3 {
		return errors.New("bad counter snapshot")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sums == nil {
		c.sums = map[paxos.GroupID]uint64{}
	}
	c.sums[g] = v
	return nil
}

func (c *snapCounter) sum(g paxos.GroupID) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sums[g]
}

// memFetcher transfers snapshots between the stores of one process, unless
// the network cuts either side off.
type memFetcher struct {
	net    *MemNetwork
	self   paxos.NodeID
	stores map[paxos.NodeID]*paxos.MemoryStorage
	mu     *sync.Mutex
	asked  *[]paxos.NodeID
}

func (f memFetcher) FetchSnapshot(ctx context.Context, from paxos.NodeID, g paxos.GroupID, minSlot uint64) (uint64, []byte, error) {
	f.mu.Lock()
	*f.asked = append(*f.asked, from)
	f.mu.Unlock()
	f.net.mu.RLock()
	cut := f.net.cut[from] || f.net.cut[f.self]
	f.net.mu.RUnlock()
	if cut {
		return 0, nil, fmt.Errorf("node %d unreachable", from)
	}
	slot, data, err := f.stores[from].LoadSnapshot(g)
	if err == nil && slot < minSlot {
		err = fmt.Errorf("node %d has a snapshot at %d only", from, slot)
	}
	return slot, data, err
}

// TestLaggingReplicaInstallsSnapshot cuts a node off while the others apply
// far more slots than their logs keep, and checks that on its return it
// installs a snapshot from the peer its core names, catches up from the log
// after it, and restarts from its own stored snapshot.
func TestLaggingReplicaInstallsSnapshot(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := NewMemNetwork()
	ids := []paxos.NodeID{1, 2, 3}
	stores := map[paxos.NodeID]*paxos.MemoryStorage{}
	for _, id := range ids {
		stores[id] = paxos.NewMemoryStorage()
	}
	var mu sync.Mutex
	var asked []paxos.NodeID
	var wg sync.WaitGroup
	sms := map[paxos.NodeID]*snapCounter{}
	start := func(ctx context.Context, id paxos.NodeID) *Replica {
		sms[id] = &snapCounter{}
		r, err := New(Config{
			Core:          paxos.Config{ID: id, Nodes: ids, Groups: 1, AutoCampaign: true, ElectionTicks: 10, MaxFetchEntries: 8},
			Tick:          2 * time.Millisecond,
			Store:         stores[id],
			Transport:     net,
			StateMachine:  sms[id],
			SnapshotEvery: 20, SnapshotMargin: 4,
			Fetcher: memFetcher{net: net, self: id, stores: stores, mu: &mu, asked: &asked},
		})
		if err != nil {
			t.Fatal(err)
		}
		net.Register(id, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				t.Errorf("replica %d stopped: %v", id, err)
			}
		}()
		return r
	}
	reps := map[paxos.NodeID]*Replica{}
	for _, id := range ids {
		reps[id] = start(ctx, id)
	}
	c := &cluster{net: net, replicas: []*Replica{reps[1], reps[2], reps[3]}}
	net.Isolate(3, true)
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	const cmds = 200
	for i := range cmds {
		cmd := paxos.Command{ID: paxos.CommandID{Client: 7, Seq: uint64(i + 1)}, Ack: uint64(i + 1), Data: []byte("x")}
		if _, err := c.propose(pctx, 0, cmd); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	t.Logf("%d commands chosen while node 3 was cut off", cmds)
	if sms[1].sum(0) != cmds && sms[2].sum(0) != cmds {
		t.Fatalf("sums %d and %d, want %d", sms[1].sum(0), sms[2].sum(0), cmds)
	}
	if es, _ := stores[1].Entries(0, 0, 100, 100); len(es) > 0 && es[0].Slot == 0 {
		t.Fatalf("node 1 still keeps slot 0 after snapshots every 20 slots")
	}
	net.Isolate(3, false)
	const hangGuard = time.Minute
	deadline := time.Now().Add(hangGuard)
	for sms[3].sum(0) != cmds || reps[3].SnapshotsInstalled() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node 3: sum %d and %d snapshots installed %v after it came back; want %d and at least one", sms[3].sum(0), reps[3].SnapshotsInstalled(), hangGuard, cmds)
		}
		// Keep the group busy so that the lagging node hears of the commit.
		cmd := paxos.Command{ID: paxos.CommandID{Client: 8, Seq: 1}, Ack: 1}
		if _, err := c.propose(pctx, 0, cmd); err != nil {
			for _, id := range ids {
				st, _ := reps[id].Status(context.Background(), 0)
				t.Logf("node %d: %+v sum %d installed %d", id, st, sms[id].sum(0), reps[id].SnapshotsInstalled())
			}
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	for _, from := range asked {
		if from == 3 {
			t.Errorf("node 3 asked itself for a snapshot")
		}
	}
	mu.Unlock()
	slot, _, _ := stores[3].LoadSnapshot(0)
	if slot == 0 {
		t.Fatal("node 3 installed a snapshot but did not store it")
	}

	// A restart restores the stored snapshot and replays only the log after
	// it: the sum comes back whole.
	cancel()
	wg.Wait()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	r3 := start(ctx2, 3)
	deadline = time.Now().Add(hangGuard)
	for sms[3].sum(0) != cmds {
		if time.Now().After(deadline) {
			t.Fatalf("node 3 restarted with sum %d, want %d", sms[3].sum(0), cmds)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = r3
	cancel2()
	wg.Wait()
}

func TestSnapshotEnvelopeRefusesDamage(t *testing.T) {
	ms := paxos.InitialMembership([]paxos.NodeID{1, 2, 3})
	ms.Epochs = append(ms.Epochs, paxos.Epoch{From: 300, Members: []paxos.Member{{ID: 1, Voter: true}, {ID: 2, Voter: true}, {ID: 4, Addr: "127.0.0.1:7004"}}})
	env := encodeEnvelope(42, paxos.NewApplier(1, 1).Snapshot(), []byte("state"), &ms)
	if s, _, st, got, err := decodeEnvelope(env); err != nil || s != 42 || string(st) != "state" || got.String() != ms.String() {
		t.Fatalf("round trip: slot %d state %q membership %s err %v", s, st, got, err)
	}
	for i := range env {
		bad := bytes.Clone(env)
		bad[i] ^= 0x10
		if _, _, _, _, err := decodeEnvelope(bad); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("byte %d flipped: %v, want ErrBadSnapshot", i, err)
		}
	}
	if _, _, _, _, err := decodeEnvelope(env[:len(env)-1]); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("cut: %v, want ErrBadSnapshot", err)
	}
}

// slowCapturer is snapCounter whose snapshot encoding waits for release:
// a large table's encoding, made long on purpose.
type slowCapturer struct {
	snapCounter
	encoding chan struct{} // closed when the first encoding starts
	release  chan struct{}
	once     sync.Once
}

func (c *slowCapturer) CaptureGroup(g paxos.GroupID) (func() ([]byte, error), error) {
	data, err := c.SnapshotGroup(g) // the capture: a copy, taken now
	return func() ([]byte, error) {
		c.once.Do(func() { close(c.encoding) })
		<-c.release
		return data, err
	}, err
}

// While a snapshot is being encoded (for a large lock table, tens or
// hundreds of milliseconds), proposals go on being chosen: the encoding and
// the save run off the replica's goroutine. With the snapshot taken on the
// loop, as before, the commands below waited for the release, and the test
// fails at its hang guard. The snapshot is saved once released.
func TestSnapshotEncodingDoesNotStallProposals(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	net := NewMemNetwork()
	ids := []paxos.NodeID{1, 2, 3}
	var wg sync.WaitGroup
	var reps []*Replica
	var sms []*slowCapturer
	for _, id := range ids {
		sm := &slowCapturer{encoding: make(chan struct{}), release: make(chan struct{})}
		sms = append(sms, sm)
		r, err := New(Config{
			Core:          paxos.Config{ID: id, Nodes: ids, Groups: 1, AutoCampaign: true, ElectionTicks: 10},
			Tick:          2 * time.Millisecond,
			Store:         paxos.NewMemoryStorage(),
			Transport:     net,
			StateMachine:  sm,
			SnapshotEvery: 10, SnapshotMargin: 4,
		})
		if err != nil {
			t.Fatal(err)
		}
		net.Register(id, r)
		reps = append(reps, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				t.Errorf("replica %d stopped: %v", id, err)
			}
		}()
	}
	defer func() {
		for _, sm := range sms {
			select {
			case <-sm.release:
			default:
				close(sm.release)
			}
		}
		cancel()
		wg.Wait()
	}()
	c := &cluster{net: net, replicas: reps}
	pctx, pcancel := context.WithTimeout(ctx, time.Minute) // a hang guard
	defer pcancel()
	seq := uint64(0)
	propose := func() {
		t.Helper()
		seq++
		cmd := paxos.Command{ID: paxos.CommandID{Client: 7, Seq: seq}, Ack: seq, Data: []byte("x")}
		if _, err := c.propose(pctx, 0, cmd); err != nil {
			t.Fatalf("command %d while a snapshot encodes: %v", seq, err)
		}
	}
	for range 12 { // past SnapshotEvery: every node starts a snapshot
		propose()
	}
	for _, sm := range sms {
		select {
		case <-sm.encoding:
		case <-pctx.Done():
			t.Fatal("no snapshot started after 12 slots with SnapshotEvery 10")
		}
	}
	for range 50 {
		propose()
	}
	for _, sm := range sms {
		close(sm.release)
	}
	for _, r := range reps {
		st := r.cfg.Store.(*paxos.MemoryStorage)
		for {
			slot, err := st.SnapshotSlot(0)
			if err != nil {
				t.Fatal(err)
			}
			if slot > 0 {
				break
			}
			select {
			case <-pctx.Done():
				t.Fatal("the released snapshot was never saved")
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// TestSnapshotEnvelopeVersion1 reads a snapshot written before membership
// changes existed (envelope version 1, no membership part): it decodes, with
// an empty membership, which the core takes as the initial one.
func TestSnapshotEnvelopeVersion1(t *testing.T) {
	ap := paxos.NewApplier(1, 1).Snapshot()
	b := append([]byte(envelopeMagic), 1)
	b = binary.AppendUvarint(b, 42)
	b = binary.AppendUvarint(b, uint64(len(ap)))
	b = append(b, ap...)
	b = binary.AppendUvarint(b, 5)
	b = append(b, "state"...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	s, _, st, ms, err := decodeEnvelope(b)
	if err != nil || s != 42 || string(st) != "state" || len(ms.Epochs) != 0 {
		t.Fatalf("version 1: slot %d state %q membership %s err %v", s, st, ms, err)
	}
}
