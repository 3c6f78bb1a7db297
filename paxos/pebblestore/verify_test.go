package pebblestore

import (
	"errors"
	"io"
	randv2 "math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/lockd/lockd/paxos"
)

const verifyGroups = 4

// acceptorRun writes what an acceptor writes: round by round, a higher
// promise and one more accepted slot per group, with the commit index one
// behind; it returns the next round.
func acceptorRun(t *testing.T, s *Store, from, rounds int) int {
	t.Helper()
	for r := from; r < from+rounds; r++ {
		var ws []paxos.GroupWrite
		for g := range paxos.GroupID(verifyGroups) {
			b := paxos.Ballot{Round: uint64(r), Node: 2}
			slot := uint64(r - 1)
			ws = append(ws, paxos.GroupWrite{Group: g, Hard: &paxos.HardState{Promised: b, Commit: slot},
				Entries: []paxos.Entry{{Slot: slot, Ballot: b, Value: paxos.Value{ID: paxos.ValueID{Ballot: b, N: 1},
					Cmds: []paxos.Command{{ID: paxos.CommandID{Client: 9, Seq: uint64(r)}, Data: []byte("lock")}}}}}})
		}
		if err := s.Save(ws); err != nil {
			t.Fatal(err)
		}
	}
	return from + rounds
}

func stampT(t *testing.T, s *Store) {
	t.Helper()
	if err := s.CheckMeta(Meta{ClusterID: "c", Groups: verifyGroups, NodeID: 2}); err != nil {
		t.Fatal(err)
	}
}

func verifyT(t *testing.T, s *Store) Report {
	t.Helper()
	rep, err := s.Verify()
	if err != nil {
		t.Fatalf("Verify on intact state: %v", err)
	}
	return rep
}

func wantDamaged(t *testing.T, err error, contains string) {
	t.Helper()
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), contains) {
		t.Fatalf("got %v\nwant ErrDamaged saying %q", err, contains)
	}
}

// TestVerifyPassesIntactStateAfterCrashes: a new dir is fresh; after
// promises, a clean close, and crashes that keep only synced data (with any
// share of the unsynced rest), Verify finds the state intact: the state
// file never runs ahead of what pebble confirmed.
func TestVerifyPassesIntactStateAfterCrashes(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openT(t, "n", fs)
	if rep := verifyT(t, s); !rep.Fresh {
		t.Fatalf("new dir: %+v, want Fresh", rep)
	}
	stampT(t, s)
	next := acceptorRun(t, s, 1, 20)
	if err := s.SaveUnsynced([]paxos.GroupWrite{{Group: 0, Hard: &paxos.HardState{Promised: paxos.Ballot{Round: 20, Node: 2}, Commit: 20}}}); err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(4) {
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: int(seed * 30), RNG: randv2.New(randv2.NewPCG(seed, 2))})
		c := openT(t, "n", crashed)
		if rep := verifyT(t, c); rep.Fresh || rep.Entries != 20*verifyGroups {
			t.Fatalf("after crash %d: %+v", seed, rep)
		}
		c.Close()
	}
	acceptorRun(t, s, next, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, "n", fs)
	defer s.Close()
	verifyT(t, s)
	if s.Incarnation() == 0 {
		t.Fatal("stamped dir has no incarnation")
	}
}

// TestVerifyCatchesPebbleThatLostSyncedRecords: pebble's files from an
// earlier moment (what a WAL truncated or damaged in the middle, a cut
// MANIFEST, or missing sstables leave) next to the current state file: the
// promise went back, and Verify says so. pebble with no state at all (every
// WAL cut to zero) is caught too.
func TestVerifyCatchesPebbleThatLostSyncedRecords(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openT(t, "n", fs)
	stampT(t, s)
	next := acceptorRun(t, s, 1, 10)
	early := fs.CrashClone(vfs.CrashCloneCfg{})
	acceptorRun(t, s, next, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	copyFile(t, fs, early, "n/"+StateFile)
	e := openT(t, "n", early)
	_, err := e.Verify()
	e.Close()
	wantDamaged(t, err, "promised ballot 10.2, below the 20.2")

	// Every pebble file gone but the state file.
	empty := vfs.NewMem()
	if err := empty.MkdirAll("n", 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, fs, empty, "n/"+StateFile)
	e = openT(t, "n", empty)
	_, err = e.Verify()
	e.Close()
	wantDamaged(t, err, "pebble holds nothing")
}

// TestVerifyCatchesChecksumFailures: a record whose bytes changed fails its
// checksum on every read path, with ErrChecksum, never a panic; so does a
// damaged state file.
func TestVerifyCatchesChecksumFailures(t *testing.T) {
	fs := vfs.NewMem()
	s := openT(t, "n", fs)
	stampT(t, s)
	acceptorRun(t, s, 1, 5)
	key := appendLogKey(nil, 1, 2)
	v, closer, err := s.db.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), v...)
	closer.Close()
	bad[len(bad)/2] ^= 0x40
	if err := s.db.Set(key, bad, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Entries(1, 0, 10, 10); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Entries = %v, want ErrChecksum", err)
	}
	_, err = s.Verify()
	wantDamaged(t, err, "group 1 slot 2")
	hk := appendHardKey(nil, 3)
	if err := s.db.Set(hk, []byte{1, 2, 3}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HardState(3); !errors.Is(err, ErrChecksum) {
		t.Fatalf("HardState = %v, want ErrChecksum", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A flipped byte in the state file: Open refuses.
	f, err := fs.OpenReadWrite("n/"+StateFile, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Open("n", Options{FS: fs, Logger: quiet})
	wantDamaged(t, err, StateFile)
}

// TestVerifyCatchesMissingStateFile: pebble state without the state file
// cannot be vouched for.
func TestVerifyCatchesMissingStateFile(t *testing.T) {
	fs := vfs.NewMem()
	s := openT(t, "n", fs)
	stampT(t, s)
	acceptorRun(t, s, 1, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fs.Remove("n/" + StateFile); err != nil {
		t.Fatal(err)
	}
	s = openT(t, "n", fs)
	defer s.Close()
	_, err := s.Verify()
	wantDamaged(t, err, "no "+StateFile)
}

// TestDeleteBeforeRaisesTheFloorFirst: slots deleted on purpose are not
// reported missing.
func TestDeleteBeforeRaisesTheFloorFirst(t *testing.T) {
	fs := vfs.NewMem()
	s := openT(t, "n", fs)
	stampT(t, s)
	acceptorRun(t, s, 1, 10)
	if err := s.DeleteBefore(2, 6); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, "n", fs)
	defer s.Close()
	verifyT(t, s)
}

func copyFile(t *testing.T, from, to vfs.FS, name string) {
	t.Helper()
	src, err := from.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	b, err := io.ReadAll(src)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := to.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := dst.Sync(); err != nil {
		t.Fatal(err)
	}
	dst.Close()
}
