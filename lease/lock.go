package lease

import (
	"fmt"
	"time"
)

// lock is the state of one lock name. It exists while it has a holder, a waiter or a
// running lock-delay, and is deleted as soon as it has none (dropIfIdle). The common
// case, one exclusive holder and no waiters, costs the lock itself, one holder and the
// map entry: no per-lock map, no pointer to spare.
type lock struct {
	name string // the map key; the same string, not a copy
	// holders are in grant order, hence in increasing token order. All are exclusive
	// (then there is exactly one) or all shared, as shared says.
	holders []holder
	// waiters is the FIFO queue; waiters[0] is next. It is empty unless the lock is held
	// or delayed, and waiters[0] is never grantable between commands.
	waiters []waiter
	// delayUntil is the end of the running lock-delay (table time), or 0 when none
	// runs. Between commands it is 0 or after the table's clock.
	delayUntil int64
	// shared is the mode of the holders; false when there are none.
	shared bool
}

// holder is one grant in force.
type holder struct {
	s         *session
	token     uint64
	since     int64 // table time of the grant
	lockDelay time.Duration
	meta      string // copied from Command.Metadata; a string so it cannot change
}

// waiter is one queued request.
type waiter struct {
	s         *session
	since     int64 // table time the request was queued
	lockDelay time.Duration
	meta      string
	shared    bool
}

func (l *lock) holderIndex(s *session) int {
	for i := range l.holders {
		if l.holders[i].s == s {
			return i
		}
	}
	return -1
}

func (l *lock) waiterIndex(s *session) int {
	for i := range l.waiters {
		if l.waiters[i].s == s {
			return i
		}
	}
	return -1
}

// removeHolder removes holders[i], keeping grant order, and clears the mode when the
// last holder goes.
func (l *lock) removeHolder(i int) {
	n := len(l.holders) - 1
	copy(l.holders[i:], l.holders[i+1:])
	l.holders[n] = holder{}
	l.holders = l.holders[:n]
	if n == 0 {
		l.holders = nil
		l.shared = false
	}
}

// removeWaiter removes waiters[i], keeping FIFO order.
func (l *lock) removeWaiter(i int) {
	n := len(l.waiters) - 1
	copy(l.waiters[i:], l.waiters[i+1:])
	l.waiters[n] = waiter{}
	l.waiters = l.waiters[:n]
	if n == 0 {
		l.waiters = nil
	}
}

// compatible reports whether a request in the given mode can join the current holders.
func (l *lock) compatible(shared bool) bool {
	return len(l.holders) == 0 || (shared && l.shared)
}

// dropIfIdle deletes l when nothing holds, awaits or delays it.
func (t *Table) dropIfIdle(l *lock) {
	if len(l.holders) == 0 && len(l.waiters) == 0 && l.delayUntil == 0 {
		delete(t.locks, l.name)
	}
}

// grant makes s a holder of l with the next token and reports it.
func (t *Table) grant(l *lock, s *session, shared bool, lockDelay time.Duration, meta string, r *Result) uint64 {
	t.lastToken++
	l.holders = append(l.holders, holder{s: s, token: t.lastToken, since: t.now, lockDelay: lockDelay, meta: meta})
	l.shared = shared
	s.held = append(s.held, l)
	t.holders++
	t.count(s, 0, 1, 0)
	t.emit(r, EventGranted, l, s, t.lastToken, shared)
	return t.lastToken
}

// grantWaiters grants the head of l's queue for as long as it can be granted: one
// exclusive waiter, or the run of shared waiters at the head. Nothing is granted during
// a lock-delay. This restores the invariant that the first waiter is not grantable.
func (t *Table) grantWaiters(l *lock, r *Result) {
	if l.delayUntil > t.now {
		return
	}
	n := 0
	for n < len(l.waiters) && l.compatible(l.waiters[n].shared) {
		w := &l.waiters[n]
		// Every waiter's session is live: endSession removes a session's waiters
		// before it grants anything.
		w.s.waits = removeLock(w.s.waits, l)
		t.count(w.s, 0, 0, -1)
		t.grant(l, w.s, w.shared, w.lockDelay, w.meta, r)
		n++
	}
	if n == 0 {
		return
	}
	t.waiters -= n
	rest := copy(l.waiters, l.waiters[n:])
	clear(l.waiters[rest:])
	l.waiters = l.waiters[:rest]
	if rest == 0 {
		l.waiters = nil
	}
}

func (t *Table) acquire(c *Command, r *Result) {
	s := t.ownedSession(c, r)
	if s == nil {
		return
	}
	lim := &t.limits
	switch {
	case c.Name == "":
		t.fail(r, c, CodeInvalid, "Name", "lock name is empty: name the lock")
		return
	case len(c.Name) > lim.MaxNameBytes:
		t.failLimit(r, c, "MaxNameBytes", fmt.Sprintf("lock name is %d bytes, the limit is %d: use a shorter name", len(c.Name), lim.MaxNameBytes))
		return
	case len(c.Metadata) > lim.MaxMetadataBytes:
		t.failLimit(r, c, "MaxMetadataBytes", fmt.Sprintf("metadata is %d bytes, the limit is %d: keep less with the lock", len(c.Metadata), lim.MaxMetadataBytes))
		return
	case c.LockDelay < 0:
		t.fail(r, c, CodeInvalid, "LockDelay", fmt.Sprintf("lock-delay %v is negative: use 0 for none", c.LockDelay))
		return
	case c.LockDelay > lim.MaxLockDelay:
		t.failLimit(r, c, "MaxLockDelay", fmt.Sprintf("lock-delay %v is above the maximum %v: ask for a shorter one", c.LockDelay, lim.MaxLockDelay))
		return
	}
	l := t.locks[c.Name]
	if l != nil {
		// Asking again for what the session has is idempotent: a retried command, or a
		// client that lost track, gets the same answer and no deadlock with itself.
		if i := l.holderIndex(s); i >= 0 {
			if l.shared != c.Shared {
				t.fail(r, c, CodeModeConflict, "Shared", fmt.Sprintf("the session holds the lock %s (token %d) and asked for it %s: release it first",
					modeName(l.shared), l.holders[i].token, modeName(c.Shared)))
				return
			}
			r.Token = l.holders[i].token
			return
		}
		if i := l.waiterIndex(s); i >= 0 {
			if w := l.waiters[i]; w.shared != c.Shared {
				t.fail(r, c, CodeModeConflict, "Shared", fmt.Sprintf("the session waits for the lock %s and asked for it %s: cancel the wait first",
					modeName(w.shared), modeName(c.Shared)))
				return
			}
			r.Code = CodeQueued
			return
		}
	}
	if s.load() >= lim.MaxLocksPerSession {
		t.failLimit(r, c, "MaxLocksPerSession", fmt.Sprintf("the session holds or waits for %d locks, the limit: release some, or use another session", s.load()))
		return
	}
	if l == nil {
		l = &lock{name: c.Name}
		t.locks[c.Name] = l
	}
	// Granted at once only if nobody waits (FIFO: not even a shared request passes a
	// queued exclusive one), no lock-delay runs, and the holders allow it.
	if len(l.waiters) == 0 && l.delayUntil <= t.now && l.compatible(c.Shared) {
		r.Token = t.grant(l, s, c.Shared, c.LockDelay, string(c.Metadata), r)
		return
	}
	if !c.Wait {
		t.wouldBlock(l, c, r)
		return
	}
	if len(l.waiters) >= lim.MaxWaitersPerLock {
		t.failLimit(r, c, "MaxWaitersPerLock", fmt.Sprintf("%d requests already wait for the lock, the limit: retry later", len(l.waiters)))
		return
	}
	l.waiters = append(l.waiters, waiter{s: s, since: t.now, lockDelay: c.LockDelay, meta: string(c.Metadata), shared: c.Shared})
	s.waits = append(s.waits, l)
	t.waiters++
	t.count(s, 0, 0, 1)
	r.Code = CodeQueued
}

// wouldBlock explains why l cannot be granted now. l is held, queued or delayed, so it
// exists and is not dropped.
func (t *Table) wouldBlock(l *lock, c *Command, r *Result) {
	var detail string
	switch {
	case l.delayUntil > t.now:
		detail = fmt.Sprintf("the lock is in its lock-delay until %s, after a holder's session expired: retry then, or wait", formatTime(l.delayUntil))
	case len(l.holders) == 1 && !l.shared:
		detail = fmt.Sprintf("held exclusive by session %d (token %d): retry later, or wait", l.holders[0].s.id, l.holders[0].token)
	case len(l.holders) > 0 && !c.Shared:
		detail = fmt.Sprintf("held shared by %d sessions: retry later, or wait", len(l.holders))
	default:
		detail = fmt.Sprintf("%d requests wait ahead, and a request never passes the queue: retry later, or wait", len(l.waiters))
	}
	t.fail(r, c, CodeWouldBlock, "", detail)
	if l.delayUntil > t.now {
		r.err.Until = l.delayUntil
	}
}

func (t *Table) release(c *Command, r *Result) {
	s := t.ownedSession(c, r)
	if s == nil {
		return
	}
	l := t.locks[c.Name]
	i := -1
	if l != nil {
		i = l.holderIndex(s)
	}
	if i < 0 {
		detail := "the session does not hold the lock: nothing to release"
		if l != nil && l.waiterIndex(s) >= 0 {
			detail = "the session does not hold the lock, it waits for it: cancel the wait instead"
		}
		t.fail(r, c, CodeNotFound, "Name", detail)
		return
	}
	h, shared := l.holders[i], l.shared
	if h.token != c.Token {
		t.fail(r, c, CodeBadToken, "Token", fmt.Sprintf("token %d is not the session's grant of the lock, which is token %d: the grant it names has ended", c.Token, h.token))
		return
	}
	l.removeHolder(i)
	s.held = removeLock(s.held, l)
	t.holders--
	t.count(s, 0, -1, 0)
	t.emit(r, EventReleased, l, s, h.token, shared)
	r.Token = h.token
	t.grantWaiters(l, r)
	t.dropIfIdle(l)
}

func (t *Table) cancelWait(c *Command, r *Result) {
	s := t.ownedSession(c, r)
	if s == nil {
		return
	}
	l := t.locks[c.Name]
	i := -1
	if l != nil {
		i = l.waiterIndex(s)
	}
	if i < 0 {
		detail := "the session does not wait for the lock: nothing to cancel"
		if l != nil {
			if h := l.holderIndex(s); h >= 0 {
				r.Token = l.holders[h].token
				detail = fmt.Sprintf("the session does not wait for the lock, it was granted it (token %d): release it if it is no longer wanted", r.Token)
			}
		}
		t.fail(r, c, CodeNotFound, "Name", detail)
		return
	}
	w := l.waiters[i]
	l.removeWaiter(i)
	s.waits = removeLock(s.waits, l)
	t.waiters--
	t.count(s, 0, 0, -1)
	t.emit(r, EventCanceled, l, s, 0, w.shared)
	// The head may have left, which can unblock the requests behind it.
	t.grantWaiters(l, r)
	t.dropIfIdle(l)
}

func modeName(shared bool) string {
	if shared {
		return "shared"
	}
	return "exclusive"
}
