package lease

import (
	"slices"
	"time"
)

// LockInfo describes one lock. It is a copy: changing it changes nothing in the table.
type LockInfo struct {
	// Name is the lock name.
	Name string
	// Shared is the mode of the holders: true for shared, false for exclusive or when
	// there is no holder.
	Shared bool
	// Holders are in grant order, hence in increasing token order.
	Holders []Holder
	// Waiters is the length of the queue.
	Waiters int
	// DelayUntil is the end of the running lock-delay (unix nanoseconds), or 0.
	DelayUntil int64
}

// Holder is one grant in force.
type Holder struct {
	// Session is the holding session.
	Session uint64
	// Token is the grant's fencing token.
	Token uint64
	// Since is the table time of the grant, in unix nanoseconds.
	Since int64
	// LockDelay applies if this grant ends by session expiry.
	LockDelay time.Duration
	// Metadata is the acquire's metadata (a copy; nil when empty).
	Metadata []byte
}

// SessionInfo describes one session.
type SessionInfo struct {
	// ID is the session ID, unique in its table and never reused.
	ID uint64
	// Client is the client that opened the session.
	Client uint64
	// Owner is the identity that opened the session ("" for a session opened
	// before identities existed).
	Owner string
	// TTL is the time to live the session asked for; the master expires it after
	// that long without news from the client.
	TTL time.Duration
	// Opened is the table time the session was opened, in unix nanoseconds.
	Opened int64
	// Held and Waiting count the locks the session holds and waits for.
	Held, Waiting int
}

// Stats counts what the table holds. All counts are kept up to date by Apply: Stats is
// O(1).
type Stats struct {
	// Sessions counts open sessions.
	Sessions int
	// Locks counts lock names with state: held, awaited or in lock-delay.
	Locks int
	// Holders counts grants in force (a shared lock counts each holder).
	Holders int
	// Waiters counts queued requests over all locks.
	Waiters int
	// Delayed counts locks in lock-delay.
	Delayed int
	// LastToken is the largest token issued so far (0 before the first grant).
	LastToken uint64
	// LastSession is the largest session ID issued so far.
	LastSession uint64
}

// Lock describes the named lock. It reports false when nothing holds, awaits or delays
// the lock: the lock is free and an acquire would be granted at once.
func (t *Table) Lock(name string) (LockInfo, bool) {
	l := t.locks[name]
	if l == nil {
		return LockInfo{}, false
	}
	info := LockInfo{Name: l.name, Shared: l.shared, Waiters: len(l.waiters), DelayUntil: l.delayUntil}
	info.Holders = make([]Holder, len(l.holders))
	for i, h := range l.holders {
		info.Holders[i] = Holder{Session: h.s.id, Token: h.token, Since: h.since, LockDelay: h.lockDelay}
		if h.meta != "" {
			info.Holders[i].Metadata = []byte(h.meta)
		}
	}
	return info, true
}

// Validate reports whether token is held right now by a holder of the named lock:
// Chubby's CheckSequencer, for resources that cannot keep the highest token they saw.
// Token 0 is never valid.
func (t *Table) Validate(name string, token uint64) bool {
	l := t.locks[name]
	if l == nil || token == 0 {
		return false
	}
	for i := range l.holders {
		if l.holders[i].token == token {
			return true
		}
	}
	return false
}

// Session describes the session with the given ID, or reports false if it is not open.
func (t *Table) Session(id uint64) (SessionInfo, bool) {
	s := t.sessions[id]
	if s == nil {
		return SessionInfo{}, false
	}
	return s.info(), true
}

func (s *session) info() SessionInfo {
	return SessionInfo{ID: s.id, Client: s.client, Owner: s.owner, TTL: s.ttl, Opened: s.opened, Held: len(s.held), Waiting: len(s.waits)}
}

// Sessions describes every open session, in increasing ID order. A new master uses it to
// learn every session's TTL and start their grace periods.
func (t *Table) Sessions() []SessionInfo {
	out := make([]SessionInfo, 0, len(t.sessions))
	for _, s := range t.sessions {
		out = append(out, s.info())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Stats returns the table's counts.
func (t *Table) Stats() Stats {
	return Stats{
		Sessions:    len(t.sessions),
		Locks:       len(t.locks),
		Holders:     t.holders,
		Waiters:     t.waiters,
		Delayed:     t.delayed,
		LastToken:   t.lastToken,
		LastSession: t.lastSession,
	}
}

// NextDeadline returns the earliest end of a running lock-delay, in unix nanoseconds,
// and false when none runs. The master proposes an OpTick with Now at or after it, unless
// it proposes some other command by then: either grants the lock's waiters (or, when
// nobody waits, just forgets the delay).
func (t *Table) NextDeadline() (int64, bool) {
	if len(t.delays) == 0 {
		return 0, false
	}
	return t.delays[0].at, true
}

// Now returns the table's clock: the largest Command.Now applied, in unix nanoseconds.
func (t *Table) Now() int64 { return t.now }

// Applied returns the position of the last command applied, and false before the first.
func (t *Table) Applied() (Position, bool) { return t.applied, t.started }

// Limits returns the limits the table checks.
func (t *Table) Limits() Limits { return t.limits }
