package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/internal/backup"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
	"github.com/lockd/lockd/paxos/replica"
)

// Restoring a backup (lockd restore --from FILE). Every node of a NEW
// cluster is seeded from the same backup: its data dir gets, for each group,
// the backed-up snapshot as the group's stored snapshot, at the backed-up
// slot, with no log. All nodes then agree that every slot below it is
// chosen, and the cluster goes on from there as after a snapshot install.
// The restore rewrites each group's state in two ways, the same on every
// node (it depends only on the file):
//
//   - The election part is dropped: the old cluster's master leases mean
//     nothing to the new one, which elects masters afresh.
//   - The group is marked "token floor pending" (flagFloorPending). The
//     backup is older than the cluster it was taken from, which may have
//     granted fencing tokens after it; a restored group must never grant one
//     of those again. So the first master of each restored group proposes,
//     before any other lock command, an OpRaiseTokenFloor whose floor is
//     its clock in microseconds since 1970, and refuses other lock commands
//     until it is applied (floor.go). Through the log, every node applies
//     the same floor. Why the clock is a safe floor: a token counter grows
//     by one per grant; a new cluster starts it at 0, a restored one at a
//     floor that was a clock reading, and a group grants far fewer than a
//     million tokens a second (docs/benchmarks.md), so no counter ever
//     passes the clock in microseconds, and every token any cluster granted
//     before the restored master's clock reading is below it. That holds as
//     long as that master's clock is not behind by more than the time since
//     the last restore of the cluster the tokens came from (NTP keeps it
//     within milliseconds). Microseconds keep tokens below 2^53, so JSON
//     readers that hold numbers as doubles still read them exactly.
//
// Sessions come back with their locks and waiters. Their TTLs count from
// when a node of the new cluster starts serving their group, as after any
// master change (the new master gives every session a full TTL of grace):
// a client that reconnects to the new cluster within its TTL keeps its
// session and its locks; the others expire, and their locks go to their
// waiters (after their lock-delay).

// RestoreConfig says which backup seeds which data dir.
type RestoreConfig struct {
	// From is the backup file (lockctl snapshot save).
	From string
	// DataDir must be missing or empty.
	DataDir string
	// NodeID is the node the data dir is for.
	NodeID paxos.NodeID
	// Groups must equal the backup's group count (lockd run --groups).
	Groups int
	// ClusterID is recorded in the data dir; empty: the backup's.
	ClusterID string
	Logger    *slog.Logger
}

// RestoreReport is what a restore found in the backup and wrote.
type RestoreReport struct {
	ClusterID string
	Created   time.Time
	Groups    int
	Sessions  int
	Locks     int
	// MaxToken is the largest token the backup's groups had issued.
	MaxToken uint64
	// Slots are the groups' snapshot slots.
	Slots []uint64
}

// Refusals of a restore; lockd restore maps them to exit codes.
var (
	// ErrRestoreNotEmpty: the data dir holds something already.
	ErrRestoreNotEmpty = errors.New("restore: the data dir is not empty")
	// ErrRestoreMismatch: the backup does not fit the node's configuration
	// (group count).
	ErrRestoreMismatch = errors.New("restore: the backup does not fit this node's configuration")
)

// restoredGroup is one group, checked and rewritten for the new cluster.
type restoredGroup struct {
	slot uint64
	data []byte
}

// Restore seeds cfg.DataDir from the backup cfg.From. It checks the whole
// backup before it writes anything, and leaves the data dir empty again if
// writing fails.
func Restore(ctx context.Context, cfg RestoreConfig) (RestoreReport, error) {
	var rep RestoreReport
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeID == 0 {
		return rep, errors.New("restore: the node id must be set (1 or more)")
	}
	if err := checkEmptyDir(cfg.DataDir); err != nil {
		return rep, err
	}
	// Pass 1: check every group, so that a damaged file changes nothing.
	if _, err := readBackup(ctx, cfg, &rep, nil); err != nil {
		return rep, err
	}
	clusterID := cfg.ClusterID
	if clusterID == "" {
		clusterID = rep.ClusterID
	}
	if clusterID == "" {
		clusterID = "lockd"
	}
	created := false
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return rep, fmt.Errorf("restore: data dir: %w", err)
	}
	undo := func() {
		if created {
			os.RemoveAll(cfg.DataDir)
			return
		}
		entries, _ := os.ReadDir(cfg.DataDir)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(cfg.DataDir, e.Name()))
		}
	}
	st, err := pebblestore.Open(cfg.DataDir, pebblestore.Options{})
	if err != nil {
		undo()
		return rep, fmt.Errorf("restore: open data dir: %w", err)
	}
	write := func(g paxos.GroupID, rg restoredGroup) error {
		return st.SaveSnapshot(g, rg.slot, rg.data, 0)
	}
	err = st.CheckMeta(pebblestore.Meta{ClusterID: clusterID, Groups: cfg.Groups, NodeID: uint32(cfg.NodeID)})
	if err == nil {
		// Pass 2: the same checks again (the file could have changed
		// since), and each group is written as soon as it is checked.
		var again RestoreReport
		_, err = readBackup(ctx, cfg, &again, write)
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		undo()
		return rep, fmt.Errorf("restore: writing %s failed, and it was emptied again: %w", cfg.DataDir, err)
	}
	rep.ClusterID = clusterID
	return rep, nil
}

func checkEmptyDir(dir string) error {
	if dir == "" {
		return errors.New("restore: a data dir is required")
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore: data dir: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s holds %d entries (%s, ...): restore only seeds the data dir of a node of a NEW cluster; give an empty or missing --data-dir (to re-create one node of a running cluster, use lockd run --recover-from-peers instead)",
			ErrRestoreNotEmpty, dir, len(entries), entries[0].Name())
	}
	return nil
}

// readBackup reads and checks every group of the backup, fills rep, and
// hands each rewritten group to write (when set).
func readBackup(ctx context.Context, cfg RestoreConfig, rep *RestoreReport, write func(paxos.GroupID, restoredGroup) error) (int, error) {
	f, err := backup.Open(cfg.From)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := f.Header
	if len(h.Groups) != cfg.Groups {
		return 0, fmt.Errorf("%w: the backup has %d groups, this node was given --groups %d: restore and run the new cluster with --groups %d (the group count of a cluster is fixed)",
			ErrRestoreMismatch, len(h.Groups), cfg.Groups, len(h.Groups))
	}
	rep.ClusterID, rep.Created, rep.Groups = h.ClusterID, h.Created, len(h.Groups)
	elect, err := emptyElection()
	if err != nil {
		return 0, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		g, data, err := f.Next()
		if err == io.EOF {
			return len(h.Groups), nil
		}
		if err != nil {
			return 0, err
		}
		rg, st, err := rewriteGroup(h.Groups[g].Slot, data, elect)
		if err != nil {
			return 0, fmt.Errorf("%s: %w: group %d: %w", cfg.From, backup.ErrBadBackup, g, err)
		}
		rep.Slots = append(rep.Slots, rg.slot)
		rep.Sessions += st.Sessions
		rep.Locks += st.Locks
		rep.MaxToken = max(rep.MaxToken, st.LastToken)
		if write != nil {
			if err := write(paxos.GroupID(g), rg); err != nil {
				return 0, fmt.Errorf("group %d: %w", g, err)
			}
		}
	}
}

type groupStats = lease.Stats

// rewriteGroup checks one backed-up group whole (envelope, exactly-once
// table, group frame, lock table, election part) and returns it as the new
// cluster stores it: the same table, no election state, the token floor
// pending.
func rewriteGroup(slot uint64, data []byte, elect []byte) (restoredGroup, groupStats, error) {
	var st groupStats
	s, ap, state, err := replica.OpenSnapshot(data)
	if err != nil {
		return restoredGroup{}, st, err
	}
	if s != slot {
		return restoredGroup{}, st, fmt.Errorf("its snapshot says slot %d, the header %d", s, slot)
	}
	if err := replica.CheckApplier(ap); err != nil {
		return restoredGroup{}, st, err
	}
	table, oldElect, _, err := decodeGroupSnapshot(state)
	if err != nil {
		return restoredGroup{}, st, err
	}
	if err := election.CheckGroupSnapshot(oldElect); err != nil {
		return restoredGroup{}, st, err
	}
	t := lease.New(lease.DefaultLimits())
	if err := t.Restore(table); err != nil {
		return restoredGroup{}, st, err
	}
	st = t.Stats()
	// A group that never applied a slot is stored at slot 1 (slot 0 would
	// store nothing): every node of the new cluster takes slot 0 as an
	// empty slot inside the snapshot alike.
	slot = max(slot, 1)
	return restoredGroup{slot: slot, data: replica.SealSnapshot(slot, ap, encodeGroupSnapshot(table, elect, flagFloorPending))}, st, nil
}

// emptyElection is the election part of a group nobody leads yet.
func emptyElection() ([]byte, error) {
	e, err := election.New(election.Config{Self: 1, Nodes: []paxos.NodeID{1}, Groups: 1})
	if err != nil {
		return nil, err
	}
	return e.SnapshotGroup(0, time.Now())
}
