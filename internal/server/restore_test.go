package server

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/backup"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/replica"
)

// lockd restore refuses a damaged backup, a data dir that is not empty and
// another group count, and changes nothing when it does.
func TestRestoreRefusesAndChangesNothing(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "b.backup")
	writeBigBackup(t, file, 4, 8, 40)
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	restore := func(from, data string, groups int) error {
		_, err := Restore(context.Background(), RestoreConfig{From: from, DataDir: data, NodeID: 1, Groups: groups, Logger: discardLogger()})
		return err
	}
	empty := func(t *testing.T, data string) {
		t.Helper()
		if entries, err := os.ReadDir(data); err == nil && len(entries) > 0 {
			t.Fatalf("a refused restore left %d entries in %s", len(entries), data)
		}
	}
	for _, at := range []int{3, 30, len(good) / 2, len(good) - 2} {
		b := append([]byte(nil), good...)
		b[at] ^= 0x08
		bad := filepath.Join(dir, "bad.backup")
		if err := os.WriteFile(bad, b, 0o600); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(dir, "d-flip")
		if err := restore(bad, data, 4); !errors.Is(err, backup.ErrBadBackup) {
			t.Fatalf("byte %d of %d flipped: got %v, want ErrBadBackup", at, len(good), err)
		}
		empty(t, data)
	}
	data := filepath.Join(dir, "d-groups")
	if err := restore(file, data, 16); !errors.Is(err, ErrRestoreMismatch) || !strings.Contains(err.Error(), "--groups 4") {
		t.Fatalf("another group count: got %v", err)
	}
	empty(t, data)
	full := filepath.Join(dir, "d-full")
	os.MkdirAll(full, 0o700)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o600)
	if err := restore(file, full, 4); !errors.Is(err, ErrRestoreNotEmpty) {
		t.Fatalf("a data dir with a file in it: got %v", err)
	}
}

// A restored data dir opens as a node with the backup's locks, and the
// group's first master raises the token floor to its clock before it
// grants anything: a grant after the restore takes a token above the clock
// in microseconds at the restart, above any token the old cluster could
// have handed out (restore.go).
func TestRestoredNodeServesBackupAndRaisesTokenFloor(t *testing.T) {
	const groups = 4
	dir := t.TempDir()
	file := filepath.Join(dir, "b.backup")
	writeBigBackup(t, file, groups, 8, 40)
	data := filepath.Join(dir, "data")
	rep, err := Restore(context.Background(), RestoreConfig{From: file, DataDir: data, NodeID: 1, Groups: groups, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Locks != 40 || rep.Sessions != 8 || rep.ClusterID != "bench" {
		t.Fatalf("restore report %+v", rep)
	}
	s := openRestored(t, data, "bench", groups)
	locks := 0
	for g := range groups {
		if !s.floorPending(paxos.GroupID(g)) {
			t.Fatalf("group %d of a restored data dir does not wait for its token floor", g)
		}
		s.groups[g].mu.Lock()
		locks += s.groups[g].table.Stats().Locks
		s.groups[g].mu.Unlock()
	}
	if locks != 40 {
		t.Fatalf("the restored node holds %d locks, want 40", locks)
	}
	before := uint64(time.Now().UnixMicro())
	runUntilFloorsRaised(t, s, groups)
	for g := range groups {
		s.groups[g].mu.Lock()
		last := s.groups[g].table.Stats().LastToken
		s.groups[g].mu.Unlock()
		if last < before {
			t.Fatalf("group %d: token counter %d after the floor, below the clock %d (µs) at the restart", g, last, before)
		}
	}
}

// openRestored opens a one-node server of cluster on the data dir (not
// running yet).
func openRestored(t *testing.T, data, cluster string, groups int) *Server {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueNode("1", nil)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s, err := New(Config{ID: 1, Peers: map[paxos.NodeID]string{1: pc.LocalAddr().String()}, PacketConn: pc, Groups: groups,
		DataDir: data, ClusterID: cluster, TLS: tlsConf, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A group that never applied a slot is backed up at slot 0 and stored at
// slot 1 (restore.go): a node restored from it waits for the group's token
// floor like any other, and serves the group.
func TestRestoreOfAnUnusedGroup(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "b.backup")
	elect, err := emptyElection()
	if err != nil {
		t.Fatal(err)
	}
	w, err := backup.Create(file, "", 2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		data := replica.SealSnapshot(0, paxos.NewApplier(replica.DefaultMaxClients, 16).Snapshot(), encodeGroupSnapshot(lease.New(lease.DefaultLimits()).Snapshot(), elect, 0))
		if err := w.Add(0, 1, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	rep, err := Restore(context.Background(), RestoreConfig{From: file, DataDir: data, NodeID: 1, Groups: 2, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ClusterID != "lockd" || rep.Slots[0] != 1 {
		t.Fatalf("restore report %+v: want cluster lockd (the default) and slot 1", rep)
	}
	s := openRestored(t, data, "lockd", 2)
	for g := range 2 {
		// The old cluster may have granted tokens in it after the backup.
		if !s.floorPending(paxos.GroupID(g)) {
			t.Fatalf("restored unused group %d does not wait for its token floor", g)
		}
	}
	runUntilFloorsRaised(t, s, 2)
}

// runUntilFloorsRaised runs s until each of its groups has applied its
// token floor (the expiry loop proposes it once the node serves the
// group), then stops it.
func runUntilFloorsRaised(t *testing.T, s *Server, groups int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(2 * time.Minute) // hang guard
	for g := range groups {
		for s.floorPending(paxos.GroupID(g)) {
			if time.Now().After(deadline) {
				t.Fatalf("group %d still waits for its token floor", g)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
