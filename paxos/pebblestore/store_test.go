package pebblestore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/lockd/lockd/paxos"
)

// quiet keeps pebble's messages out of the test output.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openT(t testing.TB, dir string, fs vfs.FS) *Store {
	t.Helper()
	s, err := Open(dir, Options{FS: fs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// model is what the store must hold: the state every returned Save left.
type model struct {
	hard map[paxos.GroupID]paxos.HardState
	logs map[paxos.GroupID]map[uint64]paxos.Entry
}

func newModel() *model {
	return &model{hard: map[paxos.GroupID]paxos.HardState{}, logs: map[paxos.GroupID]map[uint64]paxos.Entry{}}
}

func (m *model) apply(writes []paxos.GroupWrite) {
	for _, w := range writes {
		if w.Hard != nil {
			m.hard[w.Group] = *w.Hard
		}
		if m.logs[w.Group] == nil {
			m.logs[w.Group] = map[uint64]paxos.Entry{}
		}
		for _, e := range w.Entries {
			e.Chosen = false
			m.logs[w.Group][e.Slot] = e
		}
	}
}

// check compares every group of the store with the model, bit for bit: the
// records read back are decoded and re-encoded, and must equal the encoding
// of what was saved.
func (m *model) check(t *testing.T, s *Store, groups int) {
	t.Helper()
	for g := range paxos.GroupID(groups) {
		hs, err := s.HardState(g)
		if err != nil {
			t.Fatal(err)
		}
		if hs != m.hard[g] {
			t.Fatalf("group %d: hard state %+v, saved %+v", g, hs, m.hard[g])
		}
		es, err := s.Entries(g, 0, ^uint64(0), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != len(m.logs[g]) {
			t.Fatalf("group %d: %d entries, saved %d", g, len(es), len(m.logs[g]))
		}
		for i, e := range es {
			want, ok := m.logs[g][e.Slot]
			if !ok {
				t.Fatalf("group %d: entry for slot %d was never saved", g, e.Slot)
			}
			if i > 0 && es[i-1].Slot >= e.Slot {
				t.Fatalf("group %d: entries out of slot order: %d then %d", g, es[i-1].Slot, e.Slot)
			}
			got, exp := paxos.AppendEntryRecord(nil, &e), paxos.AppendEntryRecord(nil, &want)
			if string(got) != string(exp) || !reflect.DeepEqual(e, want) {
				t.Fatalf("group %d slot %d: read %+v, saved %+v", g, e.Slot, e, want)
			}
		}
	}
}

// randomWrites builds one Save's worth of writes for a random subset of
// groups: sometimes a hard state, and a few entries after next[g].
func randomWrites(rng *rand.Rand, groups int, next map[paxos.GroupID]uint64) []paxos.GroupWrite {
	var ws []paxos.GroupWrite
	for g := range paxos.GroupID(groups) {
		if rng.Intn(3) == 0 {
			continue
		}
		w := paxos.GroupWrite{Group: g}
		b := paxos.Ballot{Round: uint64(1 + rng.Intn(100)), Node: paxos.NodeID(1 + rng.Intn(3))}
		if rng.Intn(2) == 0 {
			w.Hard = &paxos.HardState{Promised: b, Commit: next[g]}
		}
		for range rng.Intn(4) {
			e := paxos.Entry{Slot: next[g], Ballot: b, Chosen: rng.Intn(2) == 0,
				Value: paxos.Value{ID: paxos.ValueID{Ballot: b, N: rng.Uint64()}}}
			for range rng.Intn(5) {
				c := paxos.Command{ID: paxos.CommandID{Client: rng.Uint64(), Seq: uint64(rng.Intn(1000))}}
				if n := rng.Intn(300); n > 0 { // empty data reads back as nil
					c.Data = make([]byte, n)
					rng.Read(c.Data)
				}
				e.Value.Cmds = append(e.Value.Cmds, c)
			}
			// Sometimes rewrite a slot: a later accept replaces the entry.
			if rng.Intn(4) != 0 {
				next[g]++
			}
			w.Entries = append(w.Entries, e)
		}
		ws = append(ws, w)
	}
	return ws
}

// TestSaveCloseReopenOnDisk: state saved in a real directory is there after
// a clean close and reopen.
func TestSaveCloseReopenOnDisk(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, nil)
	m := newModel()
	rng := rand.New(rand.NewSource(1))
	next := map[paxos.GroupID]uint64{}
	for range 50 {
		ws := randomWrites(rng, 6, next)
		if err := s.Save(ws); err != nil {
			t.Fatal(err)
		}
		m.apply(ws)
	}
	m.check(t, s, 6)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, nil)
	defer s.Close()
	m.check(t, s, 6)
}

func TestEntriesIsBoundedBySlotRangeAndMax(t *testing.T) {
	s := openT(t, "db", vfs.NewMem())
	defer s.Close()
	var ws []paxos.GroupWrite
	for g := range paxos.GroupID(3) {
		w := paxos.GroupWrite{Group: g}
		// Slots 0, 2, 4, ..., 18 and the highest slot there is.
		for slot := uint64(0); slot < 20; slot += 2 {
			w.Entries = append(w.Entries, paxos.Entry{Slot: slot, Ballot: paxos.Ballot{Round: uint64(g) + 1}})
		}
		w.Entries = append(w.Entries, paxos.Entry{Slot: ^uint64(0) - 1})
		ws = append(ws, w)
	}
	if err := s.Save(ws); err != nil {
		t.Fatal(err)
	}
	slots := func(es []paxos.Entry) []uint64 {
		var out []uint64
		for _, e := range es {
			if e.Ballot.Round != 2 {
				t.Fatalf("entry of slot %d came from another group (ballot %v)", e.Slot, e.Ballot)
			}
			out = append(out, e.Slot)
		}
		return out
	}
	for _, tc := range []struct {
		from, to uint64
		max      int
		want     []uint64
	}{
		{0, 5, 100, []uint64{0, 2, 4}},
		{3, 9, 100, []uint64{4, 6, 8}},
		{3, 19, 2, []uint64{4, 6}},
		{18, 19, 1, []uint64{18}},
		{19, 1000, 10, nil},
		{5, 5, 10, nil},
		{9, 3, 10, nil},
		{0, 100, 0, nil},
	} {
		es, err := s.Entries(1, tc.from, tc.to, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		if got := slots(es); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Entries(1, %d, %d, %d) = slots %v, want %v", tc.from, tc.to, tc.max, got, tc.want)
		}
	}
	// The slot just below the largest `to` is reachable.
	es, err := s.Entries(1, 100, ^uint64(0), 10)
	if err != nil || len(es) != 1 || es[0].Slot != ^uint64(0)-1 {
		t.Fatalf("Entries to the end: %v, %v", es, err)
	}
}

func TestDeleteBeforeRemovesOnlyThatGroupsLowerSlots(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, nil)
	var ws []paxos.GroupWrite
	for g := range paxos.GroupID(3) {
		w := paxos.GroupWrite{Group: g}
		for slot := range uint64(10) {
			w.Entries = append(w.Entries, paxos.Entry{Slot: slot})
		}
		ws = append(ws, w)
	}
	if err := s.Save(ws); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBefore(1, 6); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBefore(2, 0); err != nil {
		t.Fatal(err)
	}
	count := func(g paxos.GroupID) (n int, first uint64) {
		es, err := s.Entries(g, 0, ^uint64(0), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 {
			first = es[0].Slot
		}
		return len(es), first
	}
	check := func(when string) {
		for g, want := range []struct {
			n     int
			first uint64
		}{{10, 0}, {4, 6}, {10, 0}} {
			if n, first := count(paxos.GroupID(g)); n != want.n || first != want.first {
				t.Fatalf("%s: group %d has %d entries from slot %d, want %d from %d", when, g, n, first, want.n, want.first)
			}
		}
	}
	check("after DeleteBefore")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, nil)
	defer s.Close()
	check("after reopen")
}

// TestSaveRefusesWhatCouldNotBeReadBack: a record beyond the read limits is
// refused, and nothing of that Save is written.
func TestSaveRefusesWhatCouldNotBeReadBack(t *testing.T) {
	s, err := Open("db", Options{FS: vfs.NewMem(), Logger: quiet, Limits: paxos.Limits{MaxCommandBytes: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ws := []paxos.GroupWrite{
		{Group: 0, Hard: &paxos.HardState{Commit: 5}},
		{Group: 1, Entries: []paxos.Entry{{Slot: 3, Value: paxos.Value{Cmds: []paxos.Command{{Data: make([]byte, 11)}}}}}},
	}
	err = s.Save(ws)
	if err == nil || !strings.Contains(err.Error(), "group 1 slot 3") || !strings.Contains(err.Error(), "the limit is 10") {
		t.Fatalf("err = %v, want a refusal naming group 1 slot 3 and the limit", err)
	}
	if hs, _ := s.HardState(0); hs != (paxos.HardState{}) {
		t.Fatalf("a refused Save wrote group 0's hard state: %+v", hs)
	}
}

func TestCheckMetaRefusesAnotherGroupCount(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, nil)
	want := Meta{ClusterID: "prod-eu", Groups: 16, NodeID: 2}
	if _, ok, err := s.LoadMeta(); ok || err != nil {
		t.Fatalf("new dir: LoadMeta ok=%v err=%v", ok, err)
	}
	if err := s.CheckMeta(want); err != nil {
		t.Fatalf("new dir: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, nil)
	defer s.Close()
	if got, ok, err := s.LoadMeta(); !ok || err != nil || got != want {
		t.Fatalf("LoadMeta = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	if err := s.CheckMeta(want); err != nil {
		t.Fatalf("same config: %v", err)
	}
	for _, tc := range []struct {
		m    Meta
		want string
	}{
		{Meta{ClusterID: "prod-eu", Groups: 32, NodeID: 2},
			fmt.Sprintf("data dir %s was created with 16 groups, this node was started with --groups 32: the group count is fixed when a cluster is created", dir)},
		{Meta{ClusterID: "prod-us", Groups: 16, NodeID: 2}, `belongs to cluster "prod-eu", this node was started for cluster "prod-us"`},
		{Meta{ClusterID: "prod-eu", Groups: 16, NodeID: 3}, "holds the state of node 2, this node was started as node 3"},
	} {
		err := s.CheckMeta(tc.m)
		if !errors.Is(err, ErrMetaMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckMeta(%+v) = %v\nwant ErrMetaMismatch containing %q", tc.m, err, tc.want)
		}
	}
}

func TestCheckMetaRefusesStateWithoutRecord(t *testing.T) {
	s := openT(t, "db", vfs.NewMem())
	defer s.Close()
	if err := s.Save([]paxos.GroupWrite{{Group: 3, Hard: &paxos.HardState{Commit: 1}}}); err != nil {
		t.Fatal(err)
	}
	err := s.CheckMeta(Meta{Groups: 4, NodeID: 1})
	if !errors.Is(err, ErrMetaMismatch) || !strings.Contains(err.Error(), "no cluster record") {
		t.Fatalf("err = %v", err)
	}
}

func TestMetaRecordRoundTrip(t *testing.T) {
	for _, m := range []Meta{{Groups: 1, NodeID: 1}, {ClusterID: strings.Repeat("x", maxClusterID), Groups: 4096, NodeID: 1<<32 - 1}} {
		got, err := decodeMeta(appendMeta(nil, m))
		if err != nil || got != m {
			t.Fatalf("%+v: got %+v, %v", m, got, err)
		}
		enc := appendMeta(nil, m)
		for n := range len(enc) {
			if _, err := decodeMeta(enc[:n]); err == nil {
				t.Fatalf("%+v: prefix of %d bytes decoded", m, n)
			}
		}
		if _, err := decodeMeta(append(enc, 0)); err == nil {
			t.Fatalf("%+v: trailing byte accepted", m)
		}
	}
}

func TestClosedStoreReturnsErrClosed(t *testing.T) {
	s := openT(t, "db", vfs.NewMem())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save([]paxos.GroupWrite{{Group: 1, Hard: &paxos.HardState{}}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save after Close: %v", err)
	}
	if _, err := s.HardState(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("HardState after Close: %v", err)
	}
	if _, err := s.Entries(1, 0, 10, 10); !errors.Is(err, ErrClosed) {
		t.Fatalf("Entries after Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// FuzzDecodeMeta: no input makes the cluster record decoder panic, and what
// it accepts re-encodes to the same bytes.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(appendMeta(nil, Meta{ClusterID: "prod-eu", Groups: 16, NodeID: 2}))
	f.Add(appendMeta(nil, Meta{Groups: 1, NodeID: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if out := appendMeta(nil, m); string(out) != string(b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, out)
		}
	})
}

// TestUnsyncedWritesBecomeDurableWithTheNextSync: commit-index writes made
// without a sync are readable at once and survive a clean reopen once a
// synced write followed them.
func TestUnsyncedWritesBecomeDurableWithTheNextSync(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, nil)
	hs := paxos.HardState{Promised: paxos.Ballot{Round: 3, Node: 1}, Commit: 7}
	if err := s.SaveUnsynced([]paxos.GroupWrite{{Group: 2, Hard: &hs}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.HardState(2); got != hs {
		t.Fatalf("unsynced write not visible: %+v", got)
	}
	if err := s.Save([]paxos.GroupWrite{{Group: 0, Hard: &paxos.HardState{Commit: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, nil)
	defer s.Close()
	if got, _ := s.HardState(2); got != hs {
		t.Fatalf("after reopen: %+v, want %+v", got, hs)
	}
}
