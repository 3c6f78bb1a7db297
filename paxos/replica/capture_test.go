package replica

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
)

// Capture (lockctl snapshot save) returns the group's state at a slot that
// every replica of the group reaches with the same bytes, in an envelope
// that OpenSnapshot checks, and a damaged envelope is refused.
func TestCaptureIsTheGroupsStateAtItsSlot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids := []paxos.NodeID{1, 2, 3}
	c := &cluster{net: NewMemNetwork(), cancel: cancel}
	for _, id := range ids {
		r, err := New(Config{
			Core:  paxos.Config{ID: id, Nodes: ids, Groups: 1, AutoCampaign: true, ElectionTicks: 10},
			Tick:  2 * time.Millisecond,
			Store: paxos.NewMemoryStorage(), Transport: c.net, StateMachine: &tableSM{t: lease.New(lease.DefaultLimits())},
			Logger: quietLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		c.net.Register(id, r)
		c.replicas = append(c.replicas, r)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			r.Run(ctx)
		}()
	}
	t.Cleanup(c.stop)
	for i := range 20 {
		open := lease.Command{Op: lease.OpOpenSession, Client: uint64(i + 1), TTL: time.Hour, Now: time.Now().UnixNano()}
		if _, err := c.propose(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: uint64(i + 1), Seq: 1}, Data: open.Encode()}); err != nil {
			t.Fatal(err)
		}
	}
	// Replica 1 may not be the master: it learns the last slots a little
	// later, so capture until its table holds every session (or the hang
	// guard ends the test).
	var (
		slot      uint64
		data      []byte
		ap, state []byte
		tab       *lease.Table
	)
	for {
		var err error
		slot, data, err = c.replicas[0].Capture(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var s uint64
		s, ap, state, err = OpenSnapshot(data)
		if err != nil || s != slot {
			t.Fatalf("OpenSnapshot: slot %d (want %d), %v", s, slot, err)
		}
		if err := CheckApplier(ap); err != nil {
			t.Fatal(err)
		}
		tab = lease.New(lease.DefaultLimits())
		if err := tab.Restore(state); err != nil {
			t.Fatalf("the state part is not the lock table's snapshot: %v", err)
		}
		if tab.Stats().Sessions == 20 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	s := slot
	// SealSnapshot writes the parts back (with an empty membership, the
	// restored cluster's own): they open to the same slot and parts.
	s2, ap2, state2, err := OpenSnapshot(SealSnapshot(s, ap, state))
	if err != nil || s2 != s || !bytes.Equal(ap2, ap) || !bytes.Equal(state2, state) {
		t.Fatalf("SealSnapshot of OpenSnapshot's parts opens to other parts (slot %d, %v)", s2, err)
	}
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0x40
	if _, _, _, err := OpenSnapshot(bad); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("a flipped byte: got %v, want ErrBadSnapshot", err)
	}
	if _, _, err := c.replicas[0].Capture(ctx, paxos.GroupID(7)); err == nil {
		t.Fatal("Capture of a group that does not exist worked")
	}
}
