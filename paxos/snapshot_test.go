package paxos

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"testing"
)

// chosenStore returns a storage holding slots 0..n-1 of group 0 as chosen
// (commit n) and a snapshot at snap that kept margin slots below it.
func chosenStore(t *testing.T, n, snap, margin uint64) *MemoryStorage {
	t.Helper()
	st := NewMemoryStorage()
	b := Ballot{Round: 1, Node: 2}
	w := GroupWrite{Group: 0, Hard: &HardState{Promised: b, Commit: n}}
	for s := range n {
		w.Entries = append(w.Entries, Entry{Slot: s, Ballot: b, Value: val(s+1, fmt.Sprint("v", s))})
	}
	if err := st.Save([]GroupWrite{w}); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveSnapshot(0, snap, []byte("state"), margin); err != nil {
		t.Fatal(err)
	}
	return st
}

// A peer that fetches slots our log no longer holds is told to get our
// snapshot; one that fetches slots our margin still holds gets them.
func TestSnapshotFetchBelowCompactedLogAsksForSnapshot(t *testing.T) {
	st := chosenStore(t, 10, 8, 2) // entries 6..9 kept
	n, err := New(Config{ID: 1, Nodes: nodes3, Groups: 1, Rand: func(int) int { return 0 }}, st)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := n.Status(0); st.Commit != 10 || st.Applied != 8 {
		t.Fatalf("after start: commit %d applied %d, want 10 and 8 (the snapshot's slot)", st.Commit, st.Applied)
	}
	r := drain(t, n, st)
	for _, a := range r.Committed {
		if a.Slot < 8 {
			t.Fatalf("slot %d handed out to apply, but the snapshot at 8 holds it", a.Slot)
		}
	}
	step(t, n, Message{Type: MsgFetch, From: 2, To: 1, Slot: 3})
	r = drain(t, n, st)
	rep, ok := find(r.Messages, MsgFetchReply, 2)
	if !ok || !rep.Behind || rep.Slot != 8 || len(rep.Entries) != 0 {
		t.Fatalf("fetch from slot 3 below the compacted log: got %+v, want a FetchReply marked Behind naming snapshot slot 8", rep)
	}
	// After a restart the margin below the snapshot is not served either:
	// the node cannot tell a snapshot it took (whose margin holds chosen
	// values) from one it installed (whose margin may hold stale accepts).
	step(t, n, Message{Type: MsgFetch, From: 2, To: 1, Slot: 7})
	r = drain(t, n, st)
	if rep, ok = find(r.Messages, MsgFetchReply, 2); !ok || !rep.Behind {
		t.Fatalf("fetch from slot 7 after a restart: got %+v, want a Behind reply", rep)
	}
	// A running node that takes its own snapshot serves its margin.
	live, lst := newTestNode(t, 1, nil)
	b := Ballot{Round: 1, Node: 2}
	var es []Entry
	for s := range uint64(10) {
		es = append(es, Entry{Slot: s, Ballot: b, Value: val(s+1, "v"), Chosen: true})
	}
	step(t, live, Message{Type: MsgFetchReply, From: 2, To: 1, Commit: 10, Entries: es})
	drain(t, live, lst)
	if err := lst.SaveSnapshot(0, 8, []byte("state"), 2); err != nil {
		t.Fatal(err)
	}
	if err := live.SnapshotTaken(0, 8); err != nil {
		t.Fatal(err)
	}
	step(t, live, Message{Type: MsgFetch, From: 2, To: 1, Slot: 7})
	r = drain(t, live, lst)
	rep, ok = find(r.Messages, MsgFetchReply, 2)
	if !ok || rep.Behind || len(rep.Entries) != 3 || rep.Entries[0].Slot != 7 || !rep.Entries[0].Chosen {
		t.Fatalf("fetch from slot 7, which the margin of its own snapshot keeps: got %+v, want chosen entries 7..9", rep)
	}
	step(t, live, Message{Type: MsgFetch, From: 2, To: 1, Slot: 3})
	r = drain(t, live, lst)
	if rep, ok = find(r.Messages, MsgFetchReply, 2); !ok || !rep.Behind {
		t.Fatalf("fetch from slot 3, compacted: got %+v, want a Behind reply", rep)
	}
	// A proposer preparing from below our snapshot must catch up first.
	step(t, n, Message{Type: MsgPrepare, From: 3, To: 1, Ballot: Ballot{Round: 9, Node: 3}, Slot: 3})
	r = drain(t, n, st)
	if nack, ok := find(r.AfterSync, MsgNack, 3); !ok || !nack.Behind {
		t.Fatalf("prepare from slot 3 below the snapshot: got %+v, want a Nack marked Behind", r.AfterSync)
	}
}

// A node told to get a snapshot asks its runtime for one; once installed,
// the snapshot's slots count as chosen and applied, and learning goes on.
func TestSnapshotInstallRaisesCommitAndApplied(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	step(t, n, Message{Type: MsgCommit, From: 2, To: 1, Ballot: Ballot{Round: 1, Node: 2}, Commit: 12})
	r := drain(t, n, st)
	if _, ok := find(r.Messages, MsgFetch, 2); !ok {
		t.Fatalf("a node 12 slots behind did not fetch: %+v", r.Messages)
	}
	step(t, n, Message{Type: MsgFetchReply, From: 2, To: 1, Slot: 8, Commit: 12, Behind: true})
	r = drain(t, n, st)
	if len(r.Snapshots) != 1 || r.Snapshots[0] != (SnapshotNeed{Group: 0, From: 2, Slot: 8}) {
		t.Fatalf("Ready.Snapshots %+v, want a need for node 2's snapshot at slot 8", r.Snapshots)
	}
	if err := st.SaveSnapshot(0, 8, []byte("state"), 0); err != nil {
		t.Fatal(err)
	}
	if err := n.InstallSnapshot(0, 8, Membership{}); err != nil {
		t.Fatal(err)
	}
	r = drain(t, n, st)
	if s, _ := n.Status(0); s.Commit != 8 || s.Applied != 8 {
		t.Fatalf("after install: commit %d applied %d, want 8 and 8", s.Commit, s.Applied)
	}
	if len(r.Committed) != 0 {
		t.Fatalf("install handed out slots %+v to apply; the snapshot holds them", r.Committed)
	}
	if hs, _ := st.HardState(0); hs.Commit != 8 {
		t.Fatalf("durable commit %d after install, want 8", hs.Commit)
	}
	// The rest comes from the log.
	b := Ballot{Round: 1, Node: 2}
	var es []Entry
	for s := uint64(8); s < 12; s++ {
		es = append(es, Entry{Slot: s, Ballot: b, Value: val(s+1, "x"), Chosen: true})
	}
	step(t, n, Message{Type: MsgFetchReply, From: 2, To: 1, Slot: 8, Commit: 12, Entries: es})
	r = drain(t, n, st)
	if len(r.Committed) != 4 || r.Committed[0].Slot != 8 {
		t.Fatalf("after the log catch-up: applied %+v, want slots 8..11", r.Committed)
	}
	// A restart starts from the snapshot, and replays only what follows.
	n2, err := New(Config{ID: 1, Nodes: nodes3, Groups: 1, Rand: func(int) int { return 0 }}, st)
	if err != nil {
		t.Fatal(err)
	}
	r = drain(t, n2, st)
	if len(r.Committed) != 4 || r.Committed[0].Slot != 8 {
		t.Fatalf("after a restart: replayed %+v, want slots 8..11 after the snapshot", r.Committed)
	}
}

// A master that installs a snapshot past its commit index steps down: slots
// it proposed in may have chosen other values (the commit rule).
func TestSnapshotInstallMakesMasterStepDown(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMaster(t, n, st)
	if err := n.Propose(0, Command{ID: CommandID{Client: 1, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	drain(t, n, st)
	if s, _ := n.Status(0); s.Role != "master" || s.InFlight != 1 {
		t.Fatalf("status %+v, want a master with one slot in flight", s)
	}
	if err := n.InstallSnapshot(0, 5, Membership{}); err != nil {
		t.Fatal(err)
	}
	r := drain(t, n, st)
	if s, _ := n.Status(0); s.Role != "follower" || s.Commit != 5 {
		t.Fatalf("after installing a snapshot at 5 past its slot in flight: %+v, want a follower with commit 5", s)
	}
	if len(r.Dropped) != 1 {
		t.Fatalf("the command in flight was not handed back: %+v", r.Dropped)
	}
}

func TestApplierSnapshotRestoresExactlyOnce(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	a := NewApplier(8, 4)
	apply := func(slot uint64, index int, cmd *Command) []byte { return fmt.Appendf(nil, "r%d", cmd.ID.Seq) }
	for slot := range uint64(200) {
		client := uint64(rng.Intn(12)) + 1
		seq := uint64(rng.Intn(30))
		v := Value{Cmds: []Command{{ID: CommandID{Client: client, Seq: seq}, Ack: seq / 2}}}
		a.Apply(slot, &v, apply, nil)
	}
	snap := a.Snapshot()
	b, err := RestoreApplier(snap, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Snapshot(), snap) {
		t.Fatal("a restored Applier snapshots to other bytes")
	}
	// Every remembered outcome is a duplicate for the restored Applier too.
	for id, rec := range a.clients {
		for seq, o := range rec.results {
			v := Value{Cmds: []Command{{ID: CommandID{Client: id, Seq: seq}}}}
			b.Apply(999, &v, func(uint64, int, *Command) []byte {
				t.Fatalf("command %d/%d applied again after restore", id, seq)
				return nil
			}, func(_ *Command, got Outcome) {
				if !got.Duplicate || got.Slot != o.Slot || !bytes.Equal(got.Result, o.Result) {
					t.Fatalf("command %d/%d after restore: %+v, want the first outcome %+v", id, seq, got, o)
				}
			})
		}
	}
	// Damage is refused, not trusted.
	bad := bytes.Clone(snap)
	bad[len(bad)/2] ^= 1
	if _, err := RestoreApplier(bad, 8, 4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a flipped byte: %v, want ErrCorrupt", err)
	}
	if _, err := RestoreApplier(snap, 2, 4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("more clients than the bound: %v, want ErrCorrupt", err)
	}
}

// FuzzRestoreApplier: no input makes RestoreApplier panic or fail without
// ErrCorrupt, and what it accepts snapshots back to the same bytes.
func FuzzRestoreApplier(f *testing.F) {
	a := NewApplier(16, 8)
	for slot := range uint64(20) {
		v := Value{Cmds: []Command{{ID: CommandID{Client: slot % 5, Seq: slot}, Ack: slot / 3}}}
		a.Apply(slot, &v, func(uint64, int, *Command) []byte { return []byte("ok") }, nil)
	}
	f.Add(a.Snapshot())
	f.Add(NewApplier(1, 1).Snapshot())
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := RestoreApplier(b, 16, 8)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if out := got.Snapshot(); !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, out)
		}
	})
}

// A node that accepted a value at a slot and then skipped the slot by
// installing a snapshot must never serve that accept as chosen: the store
// may still hold it (below the snapshot, within the margin, or written late
// by a pipelined persister), but it was never learned as chosen. Found by
// the simulator (seeds 7129 and 7309 of n5g1contend-stale).
func TestSnapshotInstallDistrustsOlderAccepts(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	stale := val(5, "stale accept")
	step(t, n, Message{Type: MsgAccept, From: 2, To: 1, Ballot: Ballot{Round: 3, Node: 2}, Entries: []Entry{{Slot: 5, Value: stale}}})
	drain(t, n, st)
	if err := st.SaveSnapshot(0, 8, []byte("state"), 4); err != nil { // the margin keeps slots 4..7
		t.Fatal(err)
	}
	if err := n.InstallSnapshot(0, 8, Membership{}); err != nil {
		t.Fatal(err)
	}
	drain(t, n, st)
	if es, _ := st.Entries(0, 5, 6, 1); len(es) != 1 {
		t.Fatalf("the test needs the stale accept still in the store: %+v", es)
	}
	step(t, n, Message{Type: MsgFetch, From: 3, To: 1, Slot: 5})
	r := drain(t, n, st)
	rep, ok := find(r.Messages, MsgFetchReply, 3)
	if !ok || !rep.Behind || len(rep.Entries) != 0 {
		t.Fatalf("fetch of a slot the installed snapshot covers: %+v, want a Behind reply, never the stale accept as chosen", rep)
	}
	// Nor after a restart from the same store.
	n2, err := New(Config{ID: 1, Nodes: nodes3, Groups: 1, Rand: func(int) int { return 0 }}, st)
	if err != nil {
		t.Fatal(err)
	}
	step(t, n2, Message{Type: MsgFetch, From: 3, To: 1, Slot: 5})
	r = drain(t, n2, st)
	if rep, ok := find(r.Messages, MsgFetchReply, 3); !ok || !rep.Behind || len(rep.Entries) != 0 {
		t.Fatalf("after a restart: %+v, want a Behind reply", rep)
	}
}
