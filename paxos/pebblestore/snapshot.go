package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/lockd/lockd/paxos"
)

// Snapshots (replica.SnapshotStore). A group's newest snapshot is one sealed
// record under
//
//	s/<group u32 BE>  -> slot (uvarint), snapshot bytes
//
// Saving one is a synced write of that record, then the state file's floor
// rises to the snapshot's slot (the log need not hold anything below it, so
// Verify does not count what is gone below it as lost), and then the log
// below slot-margin is deleted with one range deletion. The deleted range's
// space comes back when pebble compacts the tombstone away; the log is
// written once and never read below the floor, so nothing waits for that.

const snapPrefix = "s/"

func appendSnapKey(dst []byte, g paxos.GroupID) []byte {
	dst = append(dst, snapPrefix...)
	return binary.BigEndian.AppendUint32(dst, uint32(g))
}

// SaveSnapshot implements replica.SnapshotStore.
func (s *Store) SaveSnapshot(g paxos.GroupID, slot uint64, data []byte, margin uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	cur, err := s.SnapshotSlot(g)
	if err != nil {
		return err
	}
	if slot <= cur {
		return nil
	}
	if err := checkSpace(s.fs, s.dir, s.reserve); err != nil {
		return err
	}
	key := appendSnapKey(nil, g)
	v := make([]byte, 0, binary.MaxVarintLen64+len(data)+sumLen)
	v = binary.AppendUvarint(v, slot)
	v = append(v, data...)
	v = seal(v, key, 0)
	if err := s.db.Set(key, v, pebble.Sync); err != nil {
		return fmt.Errorf("pebblestore: save snapshot of group %d at slot %d in %s: %w", g, slot, s.dir, err)
	}
	s.cacheSnapSlot(g, slot)
	// The floor goes to the state file before anything is deleted.
	if err := s.raiseFloor(g, slot); err != nil {
		return err
	}
	if slot <= margin {
		return nil
	}
	var lo, hi [logKeyLen]byte
	if err := s.db.DeleteRange(appendLogKey(lo[:0], g, 0), appendLogKey(hi[:0], g, slot-margin), pebble.NoSync); err != nil {
		return fmt.Errorf("pebblestore: delete log of group %d below slot %d in %s: %w", g, slot-margin, s.dir, err)
	}
	return nil
}

// LoadSnapshot implements replica.SnapshotStore.
func (s *Store) LoadSnapshot(g paxos.GroupID) (uint64, []byte, error) {
	slot, data, err := s.loadSnapshot(g, true)
	return slot, data, err
}

// SnapshotSlot implements paxos.SnapshotStorage. The slot is read from the
// store once per group and then kept.
func (s *Store) SnapshotSlot(g paxos.GroupID) (uint64, error) {
	s.snapMu.Lock()
	slot, ok := s.snapSlots[g]
	s.snapMu.Unlock()
	if ok {
		return slot, nil
	}
	slot, _, err := s.loadSnapshot(g, false)
	if err == nil {
		s.cacheSnapSlot(g, slot)
	}
	return slot, err
}

func (s *Store) cacheSnapSlot(g paxos.GroupID, slot uint64) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if s.snapSlots == nil {
		s.snapSlots = map[paxos.GroupID]uint64{}
	}
	s.snapSlots[g] = max(s.snapSlots[g], slot)
}

func (s *Store) loadSnapshot(g paxos.GroupID, withData bool) (uint64, []byte, error) {
	if s.closed.Load() {
		return 0, nil, ErrClosed
	}
	key := appendSnapKey(nil, g)
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil, nil
	}
	if err != nil {
		err = fmt.Errorf("pebblestore: read snapshot of group %d in %s: %w", g, s.dir, err)
		if pebble.IsCorruptionError(err) {
			err = fmt.Errorf("%w: %w", ErrDamaged, err)
		}
		return 0, nil, err
	}
	defer closer.Close()
	rec, err := unseal(key, v)
	if err != nil {
		return 0, nil, fmt.Errorf("pebblestore: snapshot of group %d in %s: %w", g, s.dir, err)
	}
	slot, n := binary.Uvarint(rec)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: snapshot of group %d in %s has no slot", ErrDamaged, g, s.dir)
	}
	if !withData {
		return slot, nil, nil
	}
	return slot, append([]byte(nil), rec[n:]...), nil
}
