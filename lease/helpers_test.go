package lease

import (
	"fmt"
	"maps"
	"testing"
	"time"
)

// t0 is the table time the tests start at: 2026-01-01T00:00:00Z.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// harness applies commands at increasing positions and checks every invariant after
// each one.
type harness struct {
	tb   testing.TB
	t    *Table
	slot uint64
	now  int64
}

func newHarness(tb testing.TB) *harness {
	return &harness{tb: tb, t: New(DefaultLimits()), now: t0}
}

// apply stamps c with the harness clock (unless c.Now is set) and the next slot.
func (h *harness) apply(c Command) Result {
	h.tb.Helper()
	h.slot++
	if c.Now == 0 {
		c.Now = h.now
	}
	r := h.t.Apply(Position{Slot: h.slot}, c)
	if err := checkInvariants(h.t); err != nil {
		h.tb.Fatalf("after %v at slot %d: %v", c.Op, h.slot, err)
	}
	return r
}

func (h *harness) advance(d time.Duration) { h.now += int64(d) }

func (h *harness) open(client uint64) uint64 {
	h.tb.Helper()
	r := h.apply(Command{Op: OpOpenSession, Client: client, TTL: 10 * time.Second})
	if r.Code != CodeOK {
		h.tb.Fatalf("open session: %v", r.Err())
	}
	return r.Session
}

func (h *harness) acquire(s uint64, name string, shared, wait bool, delay time.Duration) Result {
	h.tb.Helper()
	return h.apply(Command{Op: OpAcquire, Session: s, Name: name, Shared: shared, Wait: wait, LockDelay: delay})
}

// mustGrant acquires and fails the test unless the grant is immediate.
func (h *harness) mustGrant(s uint64, name string, shared bool, delay time.Duration) uint64 {
	h.tb.Helper()
	r := h.acquire(s, name, shared, true, delay)
	if r.Code != CodeOK || r.Token == 0 {
		h.tb.Fatalf("acquire %q by session %d: code %v, token %d, err %v", name, s, r.Code, r.Token, r.Err())
	}
	return r.Token
}

func (h *harness) mustQueue(s uint64, name string, shared bool) {
	h.tb.Helper()
	if r := h.acquire(s, name, shared, true, 0); r.Code != CodeQueued {
		h.tb.Fatalf("acquire %q by session %d: code %v, want queued (err %v)", name, s, r.Code, r.Err())
	}
}

func (h *harness) release(s uint64, name string, token uint64) Result {
	h.tb.Helper()
	return h.apply(Command{Op: OpRelease, Session: s, Name: name, Token: token})
}

// holders returns the sessions holding name, in grant order.
func (h *harness) holders(name string) []uint64 {
	info, _ := h.t.Lock(name)
	var out []uint64
	for _, x := range info.Holders {
		out = append(out, x.Session)
	}
	return out
}

// granted returns the sessions of the EventGranted events in r, in order.
func granted(r Result) []uint64 {
	var out []uint64
	for _, e := range r.Events {
		if e.Kind == EventGranted {
			out = append(out, e.Session)
		}
	}
	return out
}

// checkInvariants walks the whole table and reports the first broken invariant of those
// documented on Table, plus the consistency of every index and counter.
func checkInvariants(t *Table) error {
	if t.now < 0 {
		return fmt.Errorf("clock %d is negative", t.now)
	}
	clients := map[uint64]uint32{}
	held, waits := 0, 0
	for id, s := range t.sessions {
		if s.id != id || id == 0 || id > t.lastSession {
			return fmt.Errorf("session %d filed under %d (last issued %d)", s.id, id, t.lastSession)
		}
		clients[s.client]++
		seen := map[*lock]bool{}
		for _, l := range s.held {
			if seen[l] || t.locks[l.name] != l || l.holderIndex(s) < 0 {
				return fmt.Errorf("session %d lists lock %q as held, wrongly", id, l.name)
			}
			seen[l] = true
		}
		for _, l := range s.waits {
			if seen[l] || t.locks[l.name] != l || l.waiterIndex(s) < 0 {
				return fmt.Errorf("session %d lists lock %q as awaited, wrongly", id, l.name)
			}
			seen[l] = true
		}
		held += len(s.held)
		waits += len(s.waits)
	}
	if !maps.Equal(clients, t.clients) {
		return fmt.Errorf("sessions per client %v, counted %v", t.clients, clients)
	}
	holders, waiters, delayed := 0, 0, 0
	for name, l := range t.locks {
		if l.name != name {
			return fmt.Errorf("lock %q filed under %q", l.name, name)
		}
		if len(l.holders) == 0 && len(l.waiters) == 0 && l.delayUntil == 0 {
			return fmt.Errorf("lock %q is idle but kept", name)
		}
		if l.delayUntil != 0 {
			if l.delayUntil <= t.now {
				return fmt.Errorf("lock %q: lock-delay ended at %d, clock %d, not cleared", name, l.delayUntil, t.now)
			}
			delayed++
		}
		if !l.shared && len(l.holders) > 1 {
			return fmt.Errorf("lock %q: %d exclusive holders", name, len(l.holders))
		}
		if l.shared && len(l.holders) == 0 {
			return fmt.Errorf("lock %q: shared mode without holders", name)
		}
		members := map[*session]bool{}
		var prev uint64
		for _, h := range l.holders {
			if h.token <= prev || h.token > t.lastToken {
				return fmt.Errorf("lock %q: token %d after %d (last issued %d)", name, h.token, prev, t.lastToken)
			}
			prev = h.token
			if t.sessions[h.s.id] != h.s || members[h.s] {
				return fmt.Errorf("lock %q: holder session %d is dead or listed twice", name, h.s.id)
			}
			members[h.s] = true
			if count(h.s.held, l) != 1 {
				return fmt.Errorf("lock %q: holder session %d does not list it once", name, h.s.id)
			}
		}
		for _, w := range l.waiters {
			if t.sessions[w.s.id] != w.s || members[w.s] {
				return fmt.Errorf("lock %q: waiter session %d is dead or listed twice", name, w.s.id)
			}
			members[w.s] = true
			if count(w.s.waits, l) != 1 {
				return fmt.Errorf("lock %q: waiter session %d does not list it once", name, w.s.id)
			}
		}
		if len(l.waiters) > 0 && l.delayUntil == 0 && l.compatible(l.waiters[0].shared) {
			return fmt.Errorf("lock %q: first waiter (session %d) grantable but waiting", name, l.waiters[0].s.id)
		}
		holders += len(l.holders)
		waiters += len(l.waiters)
	}
	if holders != t.holders || held != holders || waiters != t.waiters || waits != waiters || delayed != t.delayed {
		return fmt.Errorf("counters: holders %d/%d/%d waiters %d/%d/%d delayed %d/%d",
			t.holders, holders, held, t.waiters, waiters, waits, t.delayed, delayed)
	}
	// The delay heap: ordered, top not stale, and one live entry per delayed lock.
	live := map[*lock]bool{}
	for i, e := range t.delays {
		if i > 0 && t.delays.less(i, (i-1)/2) {
			return fmt.Errorf("delay heap out of order at %d", i)
		}
		if !e.stale() {
			live[e.l] = true
		}
	}
	if len(t.delays) > 0 && t.delays[0].stale() {
		return fmt.Errorf("delay heap top is stale")
	}
	if len(live) != delayed {
		return fmt.Errorf("delay heap has %d live entries for %d delayed locks", len(live), delayed)
	}
	return nil
}

func count(list []*lock, l *lock) int {
	n := 0
	for _, x := range list {
		if x == l {
			n++
		}
	}
	return n
}

// sameButPositionAndClock reports whether t equals the table snapshotted in before,
// except for the applied position and the clock, which every applied command moves.
func sameButPositionAndClock(before []byte, t *Table) error {
	prev := New(DefaultLimits())
	if err := prev.Restore(before); err != nil {
		return err
	}
	prev.applied, prev.started, prev.now = t.applied, t.started, t.now
	if string(prev.Snapshot()) != string(t.Snapshot()) {
		return fmt.Errorf("snapshots differ")
	}
	return nil
}
