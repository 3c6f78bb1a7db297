package lease

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// session is one client session. Its lists hold exactly the locks in which it is a
// holder (held) or a waiter (waits); a session is never both in the same lock.
type session struct {
	id     uint64
	client uint64
	owner  string // the identity that opened it ("" before identities existed)
	ttl    time.Duration
	opened int64 // table time of OpOpenSession
	// held and waits are in no meaningful order (removal swaps the last entry in):
	// whoever visits them in an order that matters sorts them first.
	held  []*lock
	waits []*lock
}

// load is what Limits.MaxLocksPerSession bounds.
func (s *session) load() int { return len(s.held) + len(s.waits) }

// removeLock removes l from list, which must contain it, without keeping order.
func removeLock(list []*lock, l *lock) []*lock {
	for i := len(list) - 1; i >= 0; i-- {
		if list[i] != l {
			continue
		}
		last := len(list) - 1
		list[i] = list[last]
		list[last] = nil
		list = list[:last]
		if cap(list) > 64 && len(list) < cap(list)/4 {
			// Give memory back after a session drops most of its locks.
			list = slices.Clip(slices.Clone(list))
		}
		return list
	}
	panic("lease: internal error: lock " + l.name + " missing from its session's list")
}

// liveSession returns the session c names, or records CodeSessionUnknown in r.
func (t *Table) liveSession(c *Command, r *Result) *session {
	if s := t.sessions[c.Session]; s != nil {
		return s
	}
	detail := fmt.Sprintf("no session %d: it was closed or expired, or never opened: open a new session", c.Session)
	if c.Op == OpExpireSession {
		detail = fmt.Sprintf("no session %d to expire: it already ended; nothing was changed", c.Session)
	}
	t.fail(r, c, CodeSessionUnknown, "Session", detail)
	return nil
}

// ownedSession returns the session c names if c.Caller may act under it, or records
// CodeSessionUnknown or CodePermission in r. A session belongs to the identity that
// opened it; admin lets another identity close it or release its grants.
func (t *Table) ownedSession(c *Command, r *Result) *session {
	s := t.liveSession(c, r)
	if s == nil || c.Caller == "" || s.owner == "" || s.owner == c.Caller {
		return s
	}
	if c.Admin && (c.Op == OpCloseSession || c.Op == OpRelease) {
		return s
	}
	t.fail(r, c, CodePermission, "Caller", fmt.Sprintf("session %d belongs to %s; you are %s", s.id, s.owner, c.Caller))
	return nil
}

// count moves s's owner's totals by the given deltas and tells the owner hook.
func (t *Table) count(s *session, sessions, held, waits int) {
	if t.ownerHook != nil {
		t.ownerHook(s.owner, OwnerCounts{Sessions: sessions, Held: held, Waiting: waits})
	}
}

// OwnerCounts are the sessions, grants and queued requests of one owner identity,
// or changes to them.
type OwnerCounts struct {
	Sessions, Held, Waiting int
}

// SetOwnerHook makes the table call fn with every change of an owner's counts, on the
// goroutine that calls Apply or Restore (which first removes the old table's counts,
// then adds the new one's). The caller keeps totals across tables (per-identity
// limits span groups). fn must not call back into the table.
func (t *Table) SetOwnerHook(fn func(owner string, delta OwnerCounts)) { t.ownerHook = fn }

func (t *Table) countAll(sign int) {
	if t.ownerHook == nil {
		return
	}
	for _, s := range t.sessions {
		t.count(s, sign, sign*len(s.held), sign*len(s.waits))
	}
}

func (t *Table) openSession(c *Command, r *Result) {
	lim := &t.limits
	switch {
	case c.TTL < lim.MinTTL:
		t.failLimit(r, c, "MinTTL", fmt.Sprintf("ttl %v is below the minimum %v: ask for a longer ttl", c.TTL, lim.MinTTL))
		return
	case c.TTL > lim.MaxTTL:
		t.failLimit(r, c, "MaxTTL", fmt.Sprintf("ttl %v is above the maximum %v: ask for a shorter ttl and keep the session alive", c.TTL, lim.MaxTTL))
		return
	case int(t.clients[c.Client]) >= lim.MaxSessionsPerClient:
		t.failLimit(r, c, "MaxSessionsPerClient", fmt.Sprintf("client %d already has %d open sessions, the limit: close sessions it no longer uses", c.Client, t.clients[c.Client]))
		return
	}
	t.lastSession++
	s := &session{id: t.lastSession, client: c.Client, owner: c.Caller, ttl: c.TTL, opened: t.now}
	t.sessions[s.id] = s
	t.count(s, 1, 0, 0)
	t.clients[s.client]++
	r.Session = s.id
}

// endSession removes s and everything it holds or waits for. Its grants end by expiry
// (EventExpired, lock-delay) when expired is set, by release otherwise. The locks are
// visited in name order, so that the tokens granted to waiters, and the events, do not
// depend on the order of s's lists.
func (t *Table) endSession(s *session, expired bool, r *Result) {
	ls := make([]*lock, 0, s.load())
	ls = append(ls, s.held...)
	ls = append(ls, s.waits...)
	slices.SortFunc(ls, func(a, b *lock) int { return strings.Compare(a.name, b.name) })

	// Unlink the session first: from here on nothing can grant it anything.
	delete(t.sessions, s.id)
	t.count(s, -1, -len(s.held), -len(s.waits))
	if t.clients[s.client]--; t.clients[s.client] == 0 {
		delete(t.clients, s.client)
	}
	for _, l := range ls {
		if i := l.holderIndex(s); i >= 0 {
			h, shared := l.holders[i], l.shared
			l.removeHolder(i)
			t.holders--
			kind := EventReleased
			if expired {
				kind = EventExpired
				if h.lockDelay > 0 {
					t.startDelay(l, addSat(t.now, h.lockDelay))
				}
			}
			t.emit(r, kind, l, s, h.token, shared)
		} else if i := l.waiterIndex(s); i >= 0 {
			w := l.waiters[i]
			l.removeWaiter(i)
			t.waiters--
			t.emit(r, EventCanceled, l, s, 0, w.shared)
		} else {
			panic("lease: internal error: session lists lock " + l.name + " but is not in it")
		}
		t.grantWaiters(l, r)
		t.dropIfIdle(l)
	}
	s.held, s.waits = nil, nil
}
