package pebblestore

import (
	"errors"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/lockd/lockd/paxos"
)

// spaceFS reports avail bytes free, whatever the file system holds.
type spaceFS struct {
	vfs.FS
	avail atomic.Uint64
}

func (f *spaceFS) GetDiskUsage(string) (vfs.DiskUsage, error) {
	a := f.avail.Load()
	return vfs.DiskUsage{AvailBytes: a, TotalBytes: 1 << 40, UsedBytes: 1<<40 - a}, nil
}

// TestOpenOnFullDiskRefuses: a node started on a full disk gets
// ErrDiskFull from Open, both when the disk is below the reserve and when
// pebble itself meets ENOSPC (injected by errorfs), and nothing panics.
func TestOpenOnFullDiskRefuses(t *testing.T) {
	low := &spaceFS{FS: vfs.NewMem()}
	low.avail.Store(1 << 20)
	if _, err := Open("n", Options{FS: low, Logger: quiet}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Open below the reserve = %v, want ErrDiskFull", err)
	}
	enospc := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			return syscall.ENOSPC
		}
		return nil
	}))
	_, err := Open("n", Options{FS: enospc, Logger: quiet, DiskReserve: -1})
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open with ENOSPC = %v, want ErrDiskFull", err)
	}
}

// TestSaveOnFullDiskWritesNothingAndResumes: below the reserve, Save
// refuses without writing anything, the state on disk stays what the last
// successful Save left (and passes Verify), and once space returns Save
// works again.
func TestSaveOnFullDiskWritesNothingAndResumes(t *testing.T) {
	fs := &spaceFS{FS: vfs.NewCrashableMem()}
	fs.avail.Store(1 << 40)
	s, err := Open("n", Options{FS: fs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stampT(t, s)
	next := acceptorRun(t, s, 1, 5)
	fs.avail.Store(1 << 20)
	b := paxos.Ballot{Round: 50, Node: 2}
	err = s.Save([]paxos.GroupWrite{{Group: 0, Hard: &paxos.HardState{Promised: b, Commit: 4}}})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Save on a full disk = %v, want ErrDiskFull", err)
	}
	if hs, err := s.HardState(0); err != nil || hs.Promised == b {
		t.Fatalf("after a refused Save: %+v, %v", hs, err)
	}
	fs.avail.Store(1 << 40)
	acceptorRun(t, s, next, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open("n", Options{FS: fs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rep := verifyT(t, s); rep.Entries != 8*verifyGroups {
		t.Fatalf("%+v", rep)
	}
}
