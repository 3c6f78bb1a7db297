package pebblestore

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/lockd/lockd/paxos"
)

// TestSnapshotCompactsLogAndSurvivesReopen: a saved snapshot comes back
// after a reopen, the log below it minus the margin is gone, an older
// snapshot changes nothing, Verify does not take the deleted slots for lost
// ones, and the core starts from the snapshot's slot.
func TestSnapshotCompactsLogAndSurvivesReopen(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("node", Options{FS: fs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckMeta(Meta{ClusterID: "c", Groups: 1, NodeID: 1}); err != nil {
		t.Fatal(err)
	}
	b := paxos.Ballot{Round: 1, Node: 1}
	w := paxos.GroupWrite{Group: 0, Hard: &paxos.HardState{Promised: b, Commit: 100}}
	for slot := range uint64(100) {
		w.Entries = append(w.Entries, paxos.Entry{Slot: slot, Ballot: b, Value: paxos.Value{Cmds: []paxos.Command{{ID: paxos.CommandID{Client: 1, Seq: slot}, Data: fmt.Appendf(nil, "c%d", slot)}}}})
	}
	if err := s.Save([]paxos.GroupWrite{w}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSnapshot(0, 90, []byte("state at 90"), 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSnapshot(0, 50, []byte("older"), 10); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open("node", Options{FS: fs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rep, err := s.Verify(); err != nil {
		t.Fatalf("Verify after compaction: %v (%+v)", err, rep)
	}
	slot, data, err := s.LoadSnapshot(0)
	if err != nil || slot != 90 || !bytes.Equal(data, []byte("state at 90")) {
		t.Fatalf("LoadSnapshot = %d %q %v, want 90 and the first snapshot's bytes", slot, data, err)
	}
	es, err := s.Entries(0, 0, 100, 200)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 20 || es[0].Slot != 80 {
		t.Fatalf("after a snapshot at 90 with margin 10 the log holds %d entries from slot %d, want 20 from 80", len(es), es[0].Slot)
	}
	n, err := paxos.New(paxos.Config{ID: 1, Nodes: []paxos.NodeID{1, 2, 3}, Groups: 1, Rand: func(int) int { return 0 }}, s)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := n.Status(0); st.Applied != 90 || st.Commit != 100 {
		t.Fatalf("core from the store: applied %d commit %d, want 90 and 100", st.Applied, st.Commit)
	}
	r := n.Ready()
	if len(r.Committed) == 0 || r.Committed[0].Slot != 90 {
		t.Fatalf("replay starts at %+v, want slot 90", r.Committed)
	}
}
