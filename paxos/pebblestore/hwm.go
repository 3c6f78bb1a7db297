package pebblestore

import (
	"fmt"
	"maps"

	"github.com/lockd/lockd/paxos"
)

// commitSlack is how far a group's durable commit index may run ahead of
// the one in the state file before Save writes the file again. Promises are
// written at once (they are what a vote rests on); commit indexes in steps,
// so that the file costs one extra fsync per commitSlack chosen slots of a
// group, not one per Save. Close writes the exact values.
const commitSlack = 256

// hwm tracks what pebble confirmed durable and keeps the state file at or
// below it. Fields are guarded by Store.hwmMu.
type hwm struct {
	// file is the content of the state file on disk; active is false until
	// the data dir is stamped (CheckMeta) or the file was found at Open.
	file   stateFile
	active bool
	// cur is what pebble confirmed durable: hard states of synced Saves,
	// and of unsynced ones that a later synced Save covered.
	cur []mark
	// pending holds the newest hard states of unsynced Saves.
	pending map[paxos.GroupID]paxos.HardState
}

func (h *hwm) at(g paxos.GroupID) *mark {
	for int(g) >= len(h.cur) {
		h.cur = append(h.cur, mark{})
	}
	return &h.cur[g]
}

func (h *hwm) raise(g paxos.GroupID, hs paxos.HardState) {
	m := h.at(g)
	if m.promised.Less(hs.Promised) {
		m.promised = hs.Promised
	}
	m.commit = max(m.commit, hs.Commit)
}

func fileMark(f *stateFile, g int) mark {
	if g < len(f.marks) {
		return f.marks[g]
	}
	return mark{}
}

// behind reports whether the file is behind cur enough to be written:
// a higher promise, or a commit index commitSlack or more ahead.
func (h *hwm) behind(slack uint64) bool {
	for g, m := range h.cur {
		f := fileMark(&h.file, g)
		if f.promised.Less(m.promised) || m.commit >= f.commit+slack && m.commit > f.commit || m.floor > f.floor {
			return true
		}
	}
	return false
}

// pendingSnapshot returns the hard states of unsynced Saves that returned
// so far: a synced Save that starts after this call makes them durable.
func (s *Store) pendingSnapshot() map[paxos.GroupID]paxos.HardState {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	if !s.hwm.active || len(s.hwm.pending) == 0 {
		return nil
	}
	return maps.Clone(s.hwm.pending)
}

// noteUnsynced records the hard states of an unsynced Save that returned.
func (s *Store) noteUnsynced(writes []paxos.GroupWrite) {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	if !s.hwm.active {
		return
	}
	if s.hwm.pending == nil {
		s.hwm.pending = map[paxos.GroupID]paxos.HardState{}
	}
	for i := range writes {
		if hs := writes[i].Hard; hs != nil {
			s.hwm.pending[writes[i].Group] = *hs
		}
	}
}

// confirm records what a synced Save made durable (its own hard states and
// those of the unsynced Saves before it) and writes the state file when it
// is behind. It runs after pebble's synced commit returned and before Save
// returns, so a reply that vouches for a new promise leaves only after the
// file holds it.
func (s *Store) confirm(pre map[paxos.GroupID]paxos.HardState, writes []paxos.GroupWrite) error {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	if !s.hwm.active {
		return nil
	}
	for g, hs := range pre {
		s.hwm.raise(g, hs)
		if cur, ok := s.hwm.pending[g]; ok && cur == hs {
			delete(s.hwm.pending, g)
		}
	}
	for i := range writes {
		if hs := writes[i].Hard; hs != nil {
			s.hwm.raise(writes[i].Group, *hs)
		}
	}
	if !s.hwm.behind(commitSlack) {
		return nil
	}
	return s.writeMarksLocked()
}

// writeMarksLocked writes cur to the state file. hwmMu is held.
func (s *Store) writeMarksLocked() error {
	f := s.hwm.file
	f.marks = make([]mark, max(len(s.hwm.cur), len(f.marks)))
	for g := range f.marks {
		old := fileMark(&s.hwm.file, g)
		m := old
		if g < len(s.hwm.cur) {
			c := s.hwm.cur[g]
			if m.promised.Less(c.promised) {
				m.promised = c.promised
			}
			m.commit = max(m.commit, c.commit)
			m.floor = max(m.floor, c.floor)
		}
		f.marks[g] = m
	}
	f.peers = maps.Clone(s.hwm.file.peers)
	if err := writeStateFile(s.fs, s.dir, &f); err != nil {
		return err
	}
	s.hwm.file = f
	return nil
}

// flushMarks makes every write so far durable and writes the exact marks;
// Close calls it.
func (s *Store) flushMarks() error {
	s.hwmMu.Lock()
	active := s.hwm.active
	s.hwmMu.Unlock()
	if !active {
		return nil
	}
	pre := s.pendingSnapshot()
	if err := s.db.LogData(nil, syncOpts); err != nil {
		return fmt.Errorf("pebblestore: sync %s: %w", s.dir, err)
	}
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	for g, hs := range pre {
		s.hwm.raise(g, hs)
	}
	if !s.hwm.behind(1) {
		return nil
	}
	return s.writeMarksLocked()
}

// raiseFloor records, durably, that g's log may be deleted below slot.
func (s *Store) raiseFloor(g paxos.GroupID, slot uint64) error {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	if !s.hwm.active {
		return nil
	}
	m := s.hwm.at(g)
	if slot <= m.floor {
		return nil
	}
	m.floor = slot
	return s.writeMarksLocked()
}

// Incarnation returns the data dir's incarnation (0 before it is stamped).
func (s *Store) Incarnation() uint64 {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	return s.hwm.file.incarnation
}

// PeerIncarnations returns the incarnation recorded for each peer.
func (s *Store) PeerIncarnations() map[uint32]uint64 {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	return maps.Clone(s.hwm.file.peers)
}

// SetPeerIncarnation records, durably, the incarnation of peer id.
func (s *Store) SetPeerIncarnation(id uint32, inc uint64) error {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	if !s.hwm.active {
		return fmt.Errorf("pebblestore: %s is not stamped (CheckMeta) yet", s.dir)
	}
	if s.hwm.file.peers[id] == inc {
		return nil
	}
	old := s.hwm.file.peers
	s.hwm.file.peers = maps.Clone(old)
	if s.hwm.file.peers == nil {
		s.hwm.file.peers = map[uint32]uint64{}
	}
	s.hwm.file.peers[id] = inc
	if err := s.writeMarksLocked(); err != nil {
		s.hwm.file.peers = old
		return err
	}
	return nil
}

// Recovering reports whether the node is catching up after it was
// re-created empty, and must not vote yet.
func (s *Store) Recovering() bool {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	return s.hwm.file.recovering
}

// SetRecovering records, durably, whether the node is recovering.
func (s *Store) SetRecovering(on bool) error {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	if !s.hwm.active {
		return fmt.Errorf("pebblestore: %s is not stamped (CheckMeta) yet", s.dir)
	}
	if s.hwm.file.recovering == on {
		return nil
	}
	s.hwm.file.recovering = on
	if err := s.writeMarksLocked(); err != nil {
		s.hwm.file.recovering = !on
		return err
	}
	return nil
}

// stamp creates the state file of a new data dir (or keeps the one a crash
// during an earlier stamp left), before the cluster record is written.
func (s *Store) stamp() error {
	s.hwmMu.Lock()
	defer s.hwmMu.Unlock()
	if s.hwm.active {
		return nil
	}
	inc, err := newIncarnation()
	if err != nil {
		return err
	}
	f := stateFile{incarnation: inc, peers: map[uint32]uint64{}}
	if err := writeStateFile(s.fs, s.dir, &f); err != nil {
		return err
	}
	s.hwm.file, s.hwm.active = f, true
	return nil
}
