package lease

import (
	"slices"
	"strings"
)

// LockEntry is one lock for a listing: its holders (with their sessions'
// owners) and its queue.
type LockEntry struct {
	LockInfo
	// Owners holds, for each of Holders, the owner identity of the holding
	// session ("" when it has none).
	Owners []string
	// Queue lists the waiters, next first.
	Queue []Queued
}

// Queued is one request waiting in a lock's queue.
type Queued struct {
	Session uint64
	Owner   string
	Shared  bool
	// Since is the table time the request was queued, in unix nanoseconds.
	Since int64
}

// ListLocks returns the locks whose names match (every lock when match is
// nil), in name order. It copies what it returns; its cost is one pass over
// the table's locks plus a sort of those that match.
func (t *Table) ListLocks(match func(name string) bool) []LockEntry {
	var out []LockEntry
	for name, l := range t.locks {
		if match != nil && !match(name) {
			continue
		}
		info, _ := t.Lock(name)
		e := LockEntry{LockInfo: info, Owners: make([]string, len(l.holders))}
		for i, h := range l.holders {
			e.Owners[i] = h.s.owner
		}
		for _, w := range l.waiters {
			e.Queue = append(e.Queue, Queued{Session: w.s.id, Owner: w.s.owner, Shared: w.shared, Since: w.since})
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b LockEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// SessionLocks returns the names of the locks the session holds and those
// it waits for, each in name order; nil, nil when it is not open.
func (t *Table) SessionLocks(id uint64) (held, waiting []string) {
	s := t.sessions[id]
	if s == nil {
		return nil, nil
	}
	for _, l := range s.held {
		held = append(held, l.name)
	}
	for _, l := range s.waits {
		waiting = append(waiting, l.name)
	}
	slices.Sort(held)
	slices.Sort(waiting)
	return held, waiting
}
