package paxos

import (
	"maps"
	"slices"
)

// MemoryStorage keeps durable state in memory. It is what the simulator
// "syncs" to: a crash loses the core but keeps the MemoryStorage.
type MemoryStorage struct {
	hard map[GroupID]HardState
	logs map[GroupID]map[uint64]Entry
}

// NewMemoryStorage returns an empty MemoryStorage.
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{hard: map[GroupID]HardState{}, logs: map[GroupID]map[uint64]Entry{}}
}

// HardState implements Storage.
func (s *MemoryStorage) HardState(g GroupID) (HardState, error) { return s.hard[g], nil }

// Entries implements Storage.
func (s *MemoryStorage) Entries(g GroupID, from, to uint64, max int) ([]Entry, error) {
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

// Save applies writes as one atomic, durable step.
func (s *MemoryStorage) Save(writes []GroupWrite) error {
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
	return nil
}
