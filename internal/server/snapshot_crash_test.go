package server

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/lockd/lockd/paxos/pebblestore"
)

// TestSnapshotInstallCrashOldOrNew: a receiver that crashes while it
// installs a snapshot restarts with the old snapshot or the new one, whole,
// never a mix. Crashes are taken as pebble's crashable file system sees them
// (everything synced kept, a random part of the rest kept too), before,
// during and after the install's write.
//
// Why it holds: the switch is one write. replica.install checks the whole
// snapshot first, then calls pebblestore's SaveSnapshot, whose first step is
// a single pebble Set of the group's snapshot record (slot and bytes, sealed
// with a CRC-32C) with pebble.Sync: one WAL record, durable or not as a
// whole. Only after it returns does the replica replace the state in memory,
// raise the store's floor, and delete the log below the new slot minus the
// margin. A crash before the Set is durable restarts on the old snapshot and
// the whole log after it; a crash after restarts on the new one (the log
// above it is still there, and what was deleted below it is covered by it).
func TestSnapshotInstallCrashOldOrNew(t *testing.T) {
	a := snapServer(t, 1)
	fillGroup(t, a, 0, 20)
	oldSnap, err := a.SnapshotGroup(0)
	if err != nil {
		t.Fatal(err)
	}
	b := snapServer(t, 2)
	fillGroup(t, b, 0, 400)
	newSnap, err := b.SnapshotGroup(0)
	if err != nil {
		t.Fatal(err)
	}
	fs := vfs.NewCrashableMem()
	st, err := pebblestore.Open("/data", pebblestore.Options{FS: fs, DiskReserve: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveSnapshot(0, 100, oldSnap, 10); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		clones []*vfs.MemFS
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	clone := func(seed uint64) {
		c := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: int(seed % 100), RNG: rand.New(rand.NewPCG(seed, 3))})
		mu.Lock()
		clones = append(clones, c)
		mu.Unlock()
	}
	clone(0)
	wg.Go(func() {
		for seed := uint64(1); ; seed++ {
			select {
			case <-stop:
				return
			default:
			}
			clone(seed)
		}
	})
	if err := st.SaveSnapshot(0, 200, newSnap, 10); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	clone(1000)
	clone(1001)
	st.Close()

	oldTable, newTable := a.TableSnapshot(0), b.TableSnapshot(0)
	var sawOld, sawNew int
	for i, c := range clones {
		cst, err := pebblestore.Open("/data", pebblestore.Options{FS: c, DiskReserve: -1})
		if err != nil {
			t.Fatalf("crash %d: reopen: %v", i, err)
		}
		slot, data, err := cst.LoadSnapshot(0)
		cst.Close()
		if err != nil {
			t.Fatalf("crash %d: load: %v", i, err)
		}
		r := snapServer(t, 3)
		if err := r.RestoreGroup(0, data); err != nil {
			t.Fatalf("crash %d: the stored snapshot at slot %d does not restore: %v", i, slot, err)
		}
		switch got := r.TableSnapshot(0); {
		case slot == 100 && bytes.Equal(data, oldSnap) && bytes.Equal(got, oldTable):
			sawOld++
		case slot == 200 && bytes.Equal(data, newSnap) && bytes.Equal(got, newTable):
			sawNew++
		default:
			t.Fatalf("crash %d: restarted with slot %d and a table that is neither the old nor the new", i, slot)
		}
	}
	t.Logf("%d crashes: %d restarted on the old snapshot, %d on the new", len(clones), sawOld, sawNew)
	if sawOld == 0 || sawNew == 0 {
		t.Fatalf("crashes saw %d old and %d new states; want both", sawOld, sawNew)
	}
}
