package pebblestore

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/lockd/lockd/paxos"
)

// BenchmarkSave measures one Save (one synced pebble batch) holding one
// 1 KiB entry and a hard state for each of n groups, on a real directory.
// Compare ns/op with BenchmarkFsync: with group commit, a Save of 16 groups
// should cost about one fsync, not 16.
func BenchmarkSave(b *testing.B) {
	for _, groups := range []int{1, 8, 16} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			s := openT(b, b.TempDir(), nil)
			defer s.Close()
			ballot := paxos.Ballot{Round: 3, Node: 1}
			ws := make([]paxos.GroupWrite, groups)
			hard := make([]paxos.HardState, groups)
			entries := make([]paxos.Entry, groups)
			cmds := make([]paxos.Command, groups)
			data := make([]byte, 1<<10)
			for g := range ws {
				cmds[g] = paxos.Command{ID: paxos.CommandID{Client: uint64(g)}, Data: data}
				entries[g] = paxos.Entry{Ballot: ballot, Value: paxos.Value{ID: paxos.ValueID{Ballot: ballot}, Cmds: cmds[g : g+1]}}
				ws[g] = paxos.GroupWrite{Group: paxos.GroupID(g), Hard: &hard[g], Entries: entries[g : g+1]}
			}
			b.SetBytes(int64(groups * len(data)))
			b.ReportAllocs()
			slot := uint64(0)
			for b.Loop() {
				for g := range ws {
					hard[g] = paxos.HardState{Promised: ballot, Commit: slot}
					entries[g].Slot, entries[g].Value.ID.N = slot, slot
					cmds[g].ID.Seq = slot
				}
				if err := s.Save(ws); err != nil {
					b.Fatal(err)
				}
				slot++
			}
		})
	}
}

// BenchmarkFsync measures this machine's raw cost of appending 4 KiB to a
// file and syncing it, the floor under every synced Save.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
