package lease

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Table is the lock table of one Paxos group. Only Apply and Restore change it; the
// queries (Lock, Validate, Session, Sessions, Stats, NextDeadline, Snapshot, ...) only
// read. So its owner, the group's apply loop, may let queries run together (under a
// read lock, say) but never alongside Apply or Restore.
//
// Invariants that hold between calls (the model test checks them after every command):
//   - a lock has one exclusive holder, or one or more shared holders, or none;
//   - every holder and waiter belongs to a live session, which lists the lock;
//   - holders of a lock are in grant order, so their tokens increase;
//   - a lock with waiters is held or in its lock-delay, and its first waiter cannot be
//     granted (otherwise it would have been);
//   - a lock with no holder and no waiter exists only during a lock-delay;
//   - delayUntil is 0 or after now.
type Table struct {
	limits Limits

	// now is the table's clock: the largest Command.Now applied, never negative and
	// never decreasing, so deadlines computed from it are never in the past.
	now int64
	// applied is the position of the last command applied, valid when started.
	applied Position
	started bool

	// lastToken is the largest token issued. It only grows and it is in the snapshot:
	// that is the whole fencing-token rule (see the package documentation).
	lastToken uint64
	// lastSession is the largest session ID issued; IDs are never reused.
	lastSession uint64

	sessions map[uint64]*session
	// clients counts open sessions per client; a client with none has no entry.
	clients map[uint64]uint32
	locks   map[string]*lock

	// delays holds the locks in lock-delay, by deadline, with stale entries left in
	// place (see delayHeap). The top entry is never stale between calls.
	delays delayHeap

	// ownerHook, when set, hears every change of an owner's counts (SetOwnerHook).
	ownerHook func(owner string, delta OwnerCounts)

	// Counters for Stats, kept up to date by every change.
	holders int // grants in force
	waiters int // queued requests
	delayed int // locks whose delayUntil is set
}

// New returns an empty table that checks limits. It panics if limits.Validate fails:
// validate configuration once, at start-up, and report the error there.
func New(limits Limits) *Table {
	if err := limits.Validate(); err != nil {
		panic(err)
	}
	return &Table{
		limits:   limits,
		sessions: make(map[uint64]*session),
		clients:  make(map[uint64]uint32),
		locks:    make(map[string]*lock),
	}
}

// Apply applies the command at pos in the log and returns its outcome. It is
// deterministic: tables that apply the same commands at the same positions return the
// same results and end in the same state.
//
// Positions must strictly increase. A pos at or before the last one applied is a
// replay: Apply answers CodeStale and changes nothing, not even the clock. Otherwise the
// clock moves to max(clock, cmd.Now), lock-delays that have ended grant their waiters
// (whatever the op, so an OpTick is needed only when nothing else is proposed), and then
// the op runs. A command that fails (any code but CodeOK and CodeQueued) changes
// nothing beyond that.
//
// Bytes of the log that DecodeCommand refuses are refused by every replica alike: the
// caller skips them (or applies an OpTick in their place), and the replicas still agree.
func (t *Table) Apply(pos Position, cmd Command) Result {
	var r Result
	if t.started && !t.applied.Less(pos) {
		r.Code = CodeStale
		r.err = &Error{Code: CodeStale, Op: cmd.Op, Session: cmd.Session, Name: cmd.Name,
			Detail: fmt.Sprintf("position %v is not after %v, the last applied: the command was applied before", pos, t.applied)}
		return r
	}
	t.applied, t.started = pos, true
	if cmd.Now > t.now {
		t.now = cmd.Now
	}
	t.endDelays(&r)
	c := &cmd
	switch c.Op {
	case OpOpenSession:
		t.openSession(c, &r)
	case OpCloseSession, OpExpireSession:
		if s := t.ownedSession(c, &r); s != nil {
			t.endSession(s, c.Op == OpExpireSession, &r)
		}
	case OpAcquire:
		t.acquire(c, &r)
	case OpRelease:
		t.release(c, &r)
	case OpCancelWait:
		t.cancelWait(c, &r)
	case OpTick:
	case OpSetLimits:
		if err := c.Limits.Validate(); err != nil {
			t.fail(&r, c, CodeInvalid, "Limits", strings.TrimPrefix(err.Error(), "lease: ")+": the limits are unchanged")
			break
		}
		t.limits = c.Limits
	case OpRaiseTokenFloor:
		// Only up: tokens already granted stay below every later one.
		t.lastToken = max(t.lastToken, c.Token)
	default:
		t.fail(&r, c, CodeInvalid, "Op", fmt.Sprintf("unknown op %d: this build knows 1 to %d", c.Op, maxOp))
	}
	t.delays.dropStale()
	return r
}

// fail records a failed command in r.
func (t *Table) fail(r *Result, c *Command, code Code, field, detail string) {
	r.Code = code
	r.err = &Error{Code: code, Op: c.Op, Session: c.Session, Name: c.Name, Field: field, Detail: detail}
}

// failLimit records a command refused by the Limits field named field.
func (t *Table) failLimit(r *Result, c *Command, field, detail string) {
	t.fail(r, c, CodeLimit, field, detail)
}

// emit appends an event to r.
func (t *Table) emit(r *Result, kind EventKind, l *lock, s *session, token uint64, shared bool) {
	r.Events = append(r.Events, Event{Kind: kind, Name: l.name, Session: s.id, Token: token, Shared: shared})
}

// addSat returns at+d, saturated at the largest int64, for deadlines.
func addSat(at int64, d time.Duration) int64 {
	if int64(d) > math.MaxInt64-at {
		return math.MaxInt64
	}
	return at + int64(d)
}

// formatTime renders a table time (unix nanoseconds) for error messages, in UTC so that
// every replica writes the same text.
func formatTime(ns int64) string {
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// delayEntry says that l's lock-delay ends at at. It is stale when l.delayUntil no longer
// equals at: the delay was extended, or it ended and was cleared.
type delayEntry struct {
	at int64
	l  *lock
}

// delayHeap is a min-heap of delayEntry ordered by (at, name). That order is total, so
// the order in which due entries come out depends only on the set of entries, not on how
// the heap was built: a replica that restored a snapshot (and rebuilt the heap without
// stale entries) ends delays in the same order as one that applied the whole log.
type delayHeap []delayEntry

func (h delayHeap) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].l.name < h[j].l.name
}

func (h *delayHeap) push(e delayEntry) {
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

func (h *delayHeap) pop() delayEntry {
	old := *h
	e := old[0]
	last := len(old) - 1
	old[0] = old[last]
	old[last] = delayEntry{}
	*h = old[:last]
	h.down(0)
	return e
}

func (h delayHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (h delayHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && h.less(c+1, c) {
			c++
		}
		if !h.less(c, i) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

func (h delayHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (e delayEntry) stale() bool { return e.l.delayUntil != e.at }

// dropStale pops stale entries off the top, so that the top is the next real deadline.
func (h *delayHeap) dropStale() {
	for len(*h) > 0 && (*h)[0].stale() {
		h.pop()
	}
}

// startDelay keeps l ungranted until at, or longer if a delay already runs past at. A
// deadline not after the clock (possible only when at saturated) is already over.
func (t *Table) startDelay(l *lock, at int64) {
	if at <= t.now || at <= l.delayUntil {
		return
	}
	if l.delayUntil == 0 {
		t.delayed++
	}
	l.delayUntil = at
	t.delays.push(delayEntry{at: at, l: l})
}

// endDelays ends every lock-delay due at the current clock, in (deadline, name) order,
// and grants the waiters of those locks.
func (t *Table) endDelays(r *Result) {
	for len(t.delays) > 0 && t.delays[0].at <= t.now {
		e := t.delays.pop()
		if e.stale() {
			continue
		}
		e.l.delayUntil = 0
		t.delayed--
		t.grantWaiters(e.l, r)
		t.dropIfIdle(e.l)
	}
}
