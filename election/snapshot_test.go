package election

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// TestGroupSnapshotRestoresMasterAsTheLog: a node that restores a group
// snapshot reports the master, epoch and Seq of a node that applied the log,
// waits the lease out from the restore on (never less), and goes on applying
// the log after the snapshot.
func TestGroupSnapshotRestoresMasterAsTheLog(t *testing.T) {
	a := newTestElector(t, 1, nil)
	b := newTestElector(t, 2, nil)
	const g = 0
	mustApply(t, a, g, 3, foreignLease(3, 1), t0)
	mustApply(t, a, g, 9, foreignLease(3, 2), t0.Add(time.Second))
	snap, err := a.SnapshotGroup(g, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel, err := b.Subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	for range 3 {
		<-ch // b's initial state of each group
	}
	restoredAt := t0.Add(2 * time.Second)
	if err := b.RestoreGroup(g, snap, restoredAt); err != nil {
		t.Fatal(err)
	}
	ga, gb := a.Snapshot(t0.Add(time.Second))[g], b.Snapshot(restoredAt)[g]
	if ga.Master != gb.Master || ga.Epoch != gb.Epoch || ga.Seq != gb.Seq || gb.Master != 3 {
		t.Fatalf("restored %+v, the node that applied the log says %+v", gb, ga)
	}
	if gb.Until.Before(restoredAt.Add(DefaultLease)) {
		t.Fatalf("the restored lease ends at %v, before a full lease after the restore", gb.Until.Sub(t0))
	}
	select {
	case ev := <-ch:
		if ev.Master != 3 || ev.Epoch != ga.Epoch || ev.Seq != ga.Seq {
			t.Fatalf("restore announced %v, want master 3 epoch %d seq %d", ev, ga.Epoch, ga.Seq)
		}
	default:
		t.Fatal("a restore that changed the master announced nothing")
	}
	// A reader resuming from before the restore is told to resync.
	if _, _, err := b.Subscribe(map[paxos.GroupID]uint64{g: 1}); !errors.Is(err, ErrResync) {
		t.Fatalf("resume from before the restored state: %v, want a resync", err)
	}
	// The node does not serve or campaign early: node 3's lease holds.
	if b.Serving(g, restoredAt.Add(DefaultLease-time.Millisecond)) {
		t.Fatal("serving under another node's lease")
	}
	// The log goes on after the snapshot, and an older slot is refused.
	if err := b.Applied(g, 8, foreignLease(3, 3), restoredAt); err == nil {
		t.Fatal("a lease command before the snapshot's last one was taken")
	}
	later := restoredAt.Add(DefaultLease + time.Second)
	mustApply(t, a, g, 20, foreignLease(1, 1), later)
	mustApply(t, b, g, 20, foreignLease(1, 1), later)
	ga, gb = a.Snapshot(later)[g], b.Snapshot(later)[g]
	if ga.Master != gb.Master || ga.Epoch != gb.Epoch || ga.Seq != gb.Seq {
		t.Fatalf("after the next lease: restored node %+v, the other %+v", gb, ga)
	}
}

// TestGroupSnapshotRelease: a snapshot after a release restores "no master".
func TestGroupSnapshotRelease(t *testing.T) {
	a := newTestElector(t, 1, nil)
	b := newTestElector(t, 2, nil)
	mustApply(t, a, 1, 4, foreignLease(3, 1), t0)
	mustApply(t, a, 1, 5, LeaseCmd{Holder: 3, Release: true, To: 2, Nonce: makeNonce(0xabc3, 2)}, t0)
	snap, err := a.SnapshotGroup(1, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.RestoreGroup(1, snap, t0); err != nil {
		t.Fatal(err)
	}
	ga, gb := a.Snapshot(t0)[1], b.Snapshot(t0)[1]
	if gb.Master != 0 || ga.Epoch != gb.Epoch || ga.Seq != gb.Seq {
		t.Fatalf("restored %+v, want %+v", gb, ga)
	}
	// Restoring the same state again changes nothing.
	if err := b.RestoreGroup(1, snap, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if again := b.Snapshot(t0)[1]; again != gb {
		t.Fatalf("second restore changed %+v to %+v", gb, again)
	}
}

// TestGroupSnapshotRefusesDamage: every flipped byte is refused, and the
// state is untouched.
func TestGroupSnapshotRefusesDamage(t *testing.T) {
	a := newTestElector(t, 1, nil)
	mustApply(t, a, 0, 3, foreignLease(3, 1), t0)
	snap, _ := a.SnapshotGroup(0, t0)
	b := newTestElector(t, 2, nil)
	before := b.Snapshot(t0)
	for i := range snap {
		bad := bytes.Clone(snap)
		bad[i] ^= 0x10
		if err := b.RestoreGroup(0, bad, t0); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	if err := b.RestoreGroup(0, snap[:len(snap)-1], t0); err == nil {
		t.Fatal("a truncated snapshot was taken")
	}
	if after := b.Snapshot(t0); after[0] != before[0] {
		t.Fatalf("refused snapshots changed the state: %+v -> %+v", before[0], after[0])
	}
}

// FuzzDecodeGroupSnapshot: the decoder never panics, stays within its
// bound, and what it takes encodes back to the same bytes.
func FuzzDecodeGroupSnapshot(f *testing.F) {
	e, _ := New(Config{Self: 1, Nodes: []paxos.NodeID{1, 2, 3}, Groups: 1, Rand: func(int) int { return 5 }})
	empty, _ := e.SnapshotGroup(0, t0)
	f.Add(empty)
	_ = e.Applied(0, 7, LeaseCmd{Holder: 2, Duration: time.Second, Nonce: makeNonce(9, 1)}, t0)
	_ = e.Applied(0, 8, LeaseCmd{Holder: 3, Duration: time.Second, Nonce: makeNonce(4, 1)}, t0)
	full, _ := e.SnapshotGroup(0, t0)
	f.Add(full)
	f.Add([]byte("ELSG\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeGroupSnap(b)
		if err != nil {
			return
		}
		if len(s.held) > maxSnapHeld {
			t.Fatalf("%d held leases", len(s.held))
		}
		if again := s.encode(); !bytes.Equal(again, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, s, again)
		}
	})
}
