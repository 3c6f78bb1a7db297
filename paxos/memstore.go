package paxos

import (
	"fmt"
	"maps"
	"slices"
	"sync"
)

// MemoryStorage keeps durable state in memory. It is what the simulator
// "syncs" to: a crash loses the core but keeps the MemoryStorage. It is safe
// for concurrent use, so tests may inspect it while a replica runs.
type MemoryStorage struct {
	mu   sync.Mutex
	hard map[GroupID]HardState
	logs map[GroupID]map[uint64]Entry
	// unsynced holds writes made without a sync: visible to reads, durable
	// only with the next synced write, lost by Crash (as in a WAL).
	unsynced []GroupWrite
	snaps    map[GroupID]memSnapshot
}

type memSnapshot struct {
	slot uint64
	data []byte
}

// SaveSnapshot durably records group g's snapshot at slot (it holds every
// slot below it) and deletes the log entries below slot-margin, with every
// earlier unsynced write made durable first. An older snapshot than the one
// kept changes nothing.
func (s *MemoryStorage) SaveSnapshot(g GroupID, slot uint64, data []byte, margin uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pending := s.unsynced
	s.unsynced = nil
	s.save(pending)
	if slot <= s.snaps[g].slot {
		return nil
	}
	s.snaps[g] = memSnapshot{slot: slot, data: slices.Clone(data)}
	if slot > margin {
		for k := range s.logs[g] {
			if k < slot-margin {
				delete(s.logs[g], k)
			}
		}
	}
	return nil
}

// LoadSnapshot returns group g's newest snapshot and its slot (zero and nil
// if none).
func (s *MemoryStorage) LoadSnapshot(g GroupID) (uint64, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := s.snaps[g]
	return sn.slot, slices.Clone(sn.data), nil
}

// SnapshotSlot implements SnapshotStorage.
func (s *MemoryStorage) SnapshotSlot(g GroupID) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snaps[g].slot, nil
}

// NewMemoryStorage returns an empty MemoryStorage.
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{hard: map[GroupID]HardState{}, logs: map[GroupID]map[uint64]Entry{}, snaps: map[GroupID]memSnapshot{}}
}

// HardState implements Storage.
func (s *MemoryStorage) HardState(g GroupID) (HardState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.hard[g]
	for _, w := range s.unsynced {
		if w.Group == g && w.Hard != nil {
			hs = *w.Hard
		}
	}
	return hs, nil
}

// Entries implements Storage.
func (s *MemoryStorage) Entries(g GroupID, from, to uint64, max int) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	log := s.logs[g]
	var out []Entry
	if to-from <= 4096 {
		for k := from; k < to && len(out) < max; k++ {
			if e, ok := log[k]; ok {
				out = append(out, e)
			}
		}
		return out, nil
	}
	for _, k := range slices.Sorted(maps.Keys(log)) {
		if k >= from && k < to && len(out) < max {
			out = append(out, log[k])
		}
	}
	return out, nil
}

// SaveUnsynced records writes without making them durable. Only hard
// states may be written this way (Ready.MustSync is false only then).
func (s *MemoryStorage) SaveUnsynced(writes []GroupWrite) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range writes {
		if len(w.Entries) > 0 {
			return fmt.Errorf("paxos: unsynced write of %d entries in group %d: entries must be synced", len(w.Entries), w.Group)
		}
	}
	s.unsynced = append(s.unsynced, writes...)
	return nil
}

// Crash drops every write that was not synced.
func (s *MemoryStorage) Crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsynced = nil
}

// Save applies earlier unsynced writes and then writes, as one atomic,
// durable step.
func (s *MemoryStorage) Save(writes []GroupWrite) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pending := s.unsynced
	s.unsynced = nil
	s.save(pending)
	s.save(writes)
	return nil
}

func (s *MemoryStorage) save(writes []GroupWrite) {
	for _, w := range writes {
		if w.Hard != nil {
			s.hard[w.Group] = *w.Hard
		}
		log := s.logs[w.Group]
		if log == nil {
			log = map[uint64]Entry{}
			s.logs[w.Group] = log
		}
		for _, e := range w.Entries {
			e.Chosen = false
			log[e.Slot] = e
		}
	}
}
