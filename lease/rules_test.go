package lease

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// Each test here proves one rule of DESIGN.md ("Lock table") or of the package
// documentation, and is named after it.

func TestFencingTokenStrictlyIncreasesPerName(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.open(1), h.open(2), h.open(3)
	last := map[string]uint64{}
	record := func(r Result) {
		t.Helper()
		for _, e := range r.Events {
			if e.Kind != EventGranted {
				continue
			}
			if e.Token <= last[e.Name] {
				t.Fatalf("lock %q granted token %d after token %d", e.Name, e.Token, last[e.Name])
			}
			last[e.Name] = e.Token
		}
	}
	// Every way a grant happens: at once, to a waiter after release, to a run of shared
	// waiters, after expiry and lock-delay, after a snapshot and restore, and again
	// after the lock was forgotten.
	record(h.acquire(a, "x", false, true, time.Second))
	record(h.acquire(b, "x", true, true, 0))
	record(h.acquire(c, "x", true, true, 0))
	record(h.release(a, "x", last["x"]))
	record(h.apply(Command{Op: OpCloseSession, Session: b}))
	info, _ := h.t.Lock("x")
	record(h.release(c, "x", info.Holders[0].Token))
	if _, ok := h.t.Lock("x"); ok {
		t.Fatal("lock x kept after its last holder left")
	}
	d := h.open(4)
	record(h.acquire(d, "x", false, true, time.Second))
	record(h.acquire(c, "x", false, true, 0))
	record(h.apply(Command{Op: OpExpireSession, Session: d}))
	h.advance(time.Second)
	record(h.apply(Command{Op: OpTick}))

	restored := New(DefaultLimits())
	if err := restored.Restore(h.t.Snapshot()); err != nil {
		t.Fatal(err)
	}
	h.t = restored
	record(h.release(c, "x", last["x"]))
	record(h.acquire(c, "x", false, true, 0))
	if len(last) != 1 || last["x"] < 6 {
		t.Fatalf("expected six grants of x, tokens: %v", last)
	}
}

func TestTokensAreNeverZeroAndNeverReissued(t *testing.T) {
	h := newHarness(t)
	s := h.open(1)
	seen := map[uint64]bool{}
	for i := range 50 {
		name := []string{"a", "b", "c"}[i%3]
		tok := h.mustGrant(s, name, i%2 == 0, 0)
		if tok == 0 || seen[tok] {
			t.Fatalf("token %d issued twice or zero", tok)
		}
		seen[tok] = true
		h.release(s, name, tok)
	}
}

func TestLockDelayAppliesOnlyAfterExpiry(t *testing.T) {
	const delay = 5 * time.Second
	for _, tc := range []struct {
		name    string
		end     func(h *harness, s uint64, token uint64)
		delayed bool
	}{
		{"release", func(h *harness, s, tok uint64) { h.release(s, "x", tok) }, false},
		{"close", func(h *harness, s, _ uint64) { h.apply(Command{Op: OpCloseSession, Session: s}) }, false},
		{"expire", func(h *harness, s, _ uint64) { h.apply(Command{Op: OpExpireSession, Session: s}) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a, b := h.open(1), h.open(2)
			tok := h.mustGrant(a, "x", false, delay)
			h.mustQueue(b, "x", false)
			h.advance(time.Second)
			expiredAt := h.now
			tc.end(h, a, tok)
			if !tc.delayed {
				if got := h.holders("x"); !slices.Equal(got, []uint64{b}) {
					t.Fatalf("after %s: holders %v, want the waiter at once", tc.name, got)
				}
				if _, ok := h.t.NextDeadline(); ok {
					t.Fatal("a lock-delay runs after a release")
				}
				return
			}
			if got := h.holders("x"); len(got) != 0 {
				t.Fatalf("after expiry: holders %v, want none during the lock-delay", got)
			}
			if at, ok := h.t.NextDeadline(); !ok || at != expiredAt+int64(delay) {
				t.Fatalf("NextDeadline = %d, %v; want %d", at, ok, expiredAt+int64(delay))
			}
			h.now = expiredAt + int64(delay) - 1
			if r := h.apply(Command{Op: OpTick}); len(r.Events) != 0 {
				t.Fatalf("granted 1ns before the lock-delay ends: %v", r.Events)
			}
			h.now++
			if r := h.apply(Command{Op: OpTick}); !slices.Equal(granted(r), []uint64{b}) {
				t.Fatalf("tick at the end of the lock-delay: events %v, want a grant to %d", r.Events, b)
			}
		})
	}
}

func TestLockDelayDefaultIsZero(t *testing.T) {
	h := newHarness(t)
	a, b := h.open(1), h.open(2)
	h.mustGrant(a, "x", false, 0)
	h.mustQueue(b, "x", false)
	r := h.apply(Command{Op: OpExpireSession, Session: a})
	if !slices.Equal(granted(r), []uint64{b}) {
		t.Fatalf("expiry without lock-delay: events %v, want the waiter granted in the same command", r.Events)
	}
}

func TestLockDelayBlocksEveryoneUntilItEnds(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.open(1), h.open(2), h.open(3)
	h.mustGrant(a, "x", true, 3*time.Second)
	h.mustGrant(b, "x", true, 0)
	h.apply(Command{Op: OpExpireSession, Session: a})
	// b still holds x shared, but even a shared request waits out the delay.
	r := h.acquire(c, "x", true, false, 0)
	if r.Code != CodeWouldBlock || r.err.Until != t0+int64(3*time.Second) {
		t.Fatalf("shared request during lock-delay: %v, until %v", r.Err(), r.err)
	}
	if !strings.Contains(r.Err().Error(), "lock-delay until 2026-01-01T00:00:03Z") {
		t.Fatalf("error does not say when to retry: %v", r.Err())
	}
	// A lock freed by expiry with nobody waiting is kept only for its delay.
	h.release(b, "x", h.t.locks["x"].holders[0].token)
	if info, ok := h.t.Lock("x"); !ok || len(info.Holders) != 0 || info.DelayUntil == 0 {
		t.Fatalf("lock in lock-delay: %+v, %v", info, ok)
	}
	h.advance(3 * time.Second)
	h.apply(Command{Op: OpTick})
	if _, ok := h.t.Lock("x"); ok {
		t.Fatal("lock kept after its lock-delay ended with nobody waiting")
	}
	h.mustGrant(c, "x", false, 0)
}

func TestLongestLockDelayWins(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.open(1), h.open(2), h.open(3)
	h.mustGrant(a, "x", true, 5*time.Second)
	h.mustGrant(b, "x", true, time.Second)
	h.mustQueue(c, "x", false)
	h.apply(Command{Op: OpExpireSession, Session: a})
	h.advance(time.Second)
	h.apply(Command{Op: OpExpireSession, Session: b})
	if at, _ := h.t.NextDeadline(); at != t0+int64(5*time.Second) {
		t.Fatalf("deadline %d, want the 5s delay of the first expiry", at-t0)
	}
	h.advance(4 * time.Second)
	if r := h.apply(Command{Op: OpTick}); !slices.Equal(granted(r), []uint64{c}) {
		t.Fatalf("events %v", r.Events)
	}
}

func TestSharedDoesNotOvertakeQueuedExclusive(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.open(1), h.open(2), h.open(3)
	tok := h.mustGrant(a, "x", true, 0)
	h.mustQueue(b, "x", false)
	if r := h.acquire(c, "x", true, false, 0); r.Code != CodeWouldBlock {
		t.Fatalf("shared try-acquire behind a queued exclusive: %v, want would-block", r.Code)
	}
	h.mustQueue(c, "x", true)
	r := h.release(a, "x", tok)
	if got := granted(r); !slices.Equal(got, []uint64{b}) {
		t.Fatalf("granted %v, want the exclusive waiter %d first", got, b)
	}
	r = h.release(b, "x", r.Events[1].Token)
	if got := granted(r); !slices.Equal(got, []uint64{c}) {
		t.Fatalf("granted %v, want %d", got, c)
	}
}

func TestSharedRunAtHeadIsGrantedTogether(t *testing.T) {
	h := newHarness(t)
	a := h.open(1)
	tok := h.mustGrant(a, "x", false, 0)
	s := []uint64{h.open(2), h.open(3), h.open(4), h.open(5)}
	h.mustQueue(s[0], "x", true)
	h.mustQueue(s[1], "x", true)
	h.mustQueue(s[2], "x", false)
	h.mustQueue(s[3], "x", true)
	r := h.release(a, "x", tok)
	if got := granted(r); !slices.Equal(got, s[:2]) {
		t.Fatalf("granted %v, want the shared run %v and not past the exclusive waiter", got, s[:2])
	}
	if info, _ := h.t.Lock("x"); !info.Shared || info.Waiters != 2 {
		t.Fatalf("lock info %+v", info)
	}
}

func TestExclusiveAndSharedNeverHoldTogether(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.open(1), h.open(2), h.open(3)
	h.mustGrant(a, "x", true, 0)
	h.mustGrant(b, "x", true, 0)
	if r := h.acquire(c, "x", false, false, 0); r.Code != CodeWouldBlock {
		t.Fatalf("exclusive next to shared holders: %v", r.Code)
	}
	h.mustGrant(c, "y", false, 0)
	if r := h.acquire(a, "y", true, false, 0); r.Code != CodeWouldBlock {
		t.Fatalf("shared next to an exclusive holder: %v", r.Code)
	}
}

func TestExpiredSessionWaitersAreNeverGranted(t *testing.T) {
	for _, op := range []Op{OpExpireSession, OpCloseSession} {
		t.Run(op.String(), func(t *testing.T) {
			h := newHarness(t)
			a, b, c := h.open(1), h.open(2), h.open(3)
			tok := h.mustGrant(a, "x", false, 0)
			h.mustQueue(b, "x", false)
			h.mustQueue(c, "x", false)
			r := h.apply(Command{Op: op, Session: b})
			if len(r.Events) != 1 || r.Events[0].Kind != EventCanceled || r.Events[0].Session != b {
				t.Fatalf("ending a waiting session: events %v, want one cancel", r.Events)
			}
			if info, _ := h.t.Lock("x"); info.Waiters != 1 {
				t.Fatalf("waiters %d, want 1", info.Waiters)
			}
			if got := granted(h.release(a, "x", tok)); !slices.Equal(got, []uint64{c}) {
				t.Fatalf("granted %v, want %d", got, c)
			}
		})
	}
}

func TestSessionEndFreesLocksInNameOrder(t *testing.T) {
	h := newHarness(t)
	a, b := h.open(1), h.open(2)
	names := []string{"m", "b", "z", "a"}
	for _, n := range names {
		h.mustGrant(a, n, false, 0)
		h.mustQueue(b, n, false)
	}
	r := h.apply(Command{Op: OpCloseSession, Session: a})
	var order []string
	var prev uint64
	for _, e := range r.Events {
		if e.Kind == EventGranted {
			order = append(order, e.Name)
			if e.Token <= prev {
				t.Fatalf("tokens not increasing: %v", r.Events)
			}
			prev = e.Token
		}
	}
	if !slices.Equal(order, []string{"a", "b", "m", "z"}) {
		t.Fatalf("grants in order %v, want name order", order)
	}
}

func TestReacquireReturnsTheExistingGrant(t *testing.T) {
	h := newHarness(t)
	a, b := h.open(1), h.open(2)
	tok := h.mustGrant(a, "x", false, 0)
	for _, wait := range []bool{true, false} {
		if r := h.acquire(a, "x", false, wait, 0); r.Code != CodeOK || r.Token != tok || len(r.Events) != 0 {
			t.Fatalf("re-acquire (wait=%v): code %v token %d events %v, want the grant %d", wait, r.Code, r.Token, r.Events, tok)
		}
	}
	h.mustQueue(b, "x", false)
	if r := h.acquire(b, "x", false, false, 0); r.Code != CodeQueued {
		t.Fatalf("re-acquire while queued: %v, want queued", r.Code)
	}
	if info, _ := h.t.Lock("x"); info.Waiters != 1 {
		t.Fatalf("queued twice: %d waiters", info.Waiters)
	}
	if r := h.acquire(a, "x", true, true, 0); r.Code != CodeModeConflict || r.err.Field != "Shared" {
		t.Fatalf("re-acquire in the other mode: %v", r.Err())
	}
	if r := h.acquire(b, "x", true, true, 0); r.Code != CodeModeConflict {
		t.Fatalf("re-queue in the other mode: %v", r.Err())
	}
}

func TestReleaseNeedsTheSessionsOwnToken(t *testing.T) {
	h := newHarness(t)
	a, b := h.open(1), h.open(2)
	tok := h.mustGrant(a, "x", false, 0)
	h.mustQueue(b, "x", false)
	for _, tc := range []struct {
		session uint64
		token   uint64
		want    Code
	}{
		{a, tok + 100, CodeBadToken},
		{a, 0, CodeBadToken},
		{b, tok, CodeNotFound}, // b waits, it does not hold
		{99, tok, CodeSessionUnknown},
	} {
		if r := h.release(tc.session, "x", tc.token); r.Code != tc.want || len(r.Events) != 0 {
			t.Errorf("release by %d with token %d: %v (%v), want %v", tc.session, tc.token, r.Code, r.Err(), tc.want)
		}
	}
	if r := h.release(a, "x", tok); r.Code != CodeOK || r.Token != tok {
		t.Fatalf("release: %v", r.Err())
	}
	if r := h.release(a, "x", tok); r.Code != CodeNotFound {
		t.Fatalf("second release: %v, want not-found", r.Code)
	}
}

func TestValidateAnswersForCurrentHoldersOnly(t *testing.T) {
	h := newHarness(t)
	a, b := h.open(1), h.open(2)
	tok := h.mustGrant(a, "x", false, 0)
	if !h.t.Validate("x", tok) || h.t.Validate("x", tok+1) || h.t.Validate("y", tok) || h.t.Validate("x", 0) {
		t.Fatal("Validate wrong while held")
	}
	h.mustQueue(b, "x", false)
	r := h.release(a, "x", tok)
	if h.t.Validate("x", tok) || !h.t.Validate("x", r.Events[1].Token) {
		t.Fatal("Validate still accepts the released token, or not the new one")
	}
}

func TestCancelWaitLeavesTheQueueAndUnblocksTheRest(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.open(1), h.open(2), h.open(3)
	h.mustGrant(a, "x", true, 0)
	h.mustQueue(b, "x", false)
	h.mustQueue(c, "x", true)
	r := h.apply(Command{Op: OpCancelWait, Session: b, Name: "x"})
	if len(r.Events) != 2 || r.Events[0].Kind != EventCanceled || !slices.Equal(granted(r), []uint64{c}) {
		t.Fatalf("cancel of the blocking head: events %v, want cancel then grant to %d", r.Events, c)
	}
	r = h.apply(Command{Op: OpCancelWait, Session: c, Name: "x"})
	if r.Code != CodeNotFound || r.Token == 0 || !strings.Contains(r.Err().Error(), "was granted it") {
		t.Fatalf("cancel after the grant: %v token %d", r.Err(), r.Token)
	}
}

func TestExpiringAnUnknownSessionIsANoOp(t *testing.T) {
	h := newHarness(t)
	a := h.open(1)
	h.mustGrant(a, "x", false, 0)
	before := h.t.Snapshot()
	r := h.apply(Command{Op: OpExpireSession, Session: 42})
	if r.Code != CodeSessionUnknown || !strings.Contains(r.Err().Error(), "nothing was changed") {
		t.Fatalf("expire unknown: %v", r.Err())
	}
	if err := sameButPositionAndClock(before, h.t); err != nil {
		t.Fatalf("expiring an unknown session changed the table: %v", err)
	}
}

func TestReplayedPositionIsStaleAndChangesNothing(t *testing.T) {
	h := newHarness(t)
	a := h.open(1)
	first := h.t.applied
	h.mustGrant(a, "x", false, 0)
	before := h.t.Snapshot()
	for _, pos := range []Position{first, h.t.applied, {Slot: h.slot, Index: 0}} {
		r := h.t.Apply(pos, Command{Op: OpAcquire, Session: a, Name: "y", Now: h.now + 1e9})
		if r.Code != CodeStale {
			t.Fatalf("apply at %v after %v: %v, want stale", pos, h.t.applied, r.Code)
		}
	}
	if string(h.t.Snapshot()) != string(before) {
		t.Fatal("a stale command changed the table")
	}
	if r := h.t.Apply(Position{Slot: h.slot, Index: 1}, Command{Op: OpTick}); r.Code != CodeOK {
		t.Fatalf("next index in the same slot: %v", r.Code)
	}
}

func TestClockNeverGoesBack(t *testing.T) {
	h := newHarness(t)
	a, b := h.open(1), h.open(2)
	h.mustGrant(a, "x", false, 2*time.Second)
	h.mustQueue(b, "x", false)
	h.apply(Command{Op: OpExpireSession, Session: a})
	// A new master whose clock is an hour behind: the delay must not shrink or stretch.
	h.apply(Command{Op: OpTick, Now: t0 - int64(time.Hour)})
	if h.t.Now() != t0 {
		t.Fatalf("clock went back to %d", h.t.Now())
	}
	if r := h.apply(Command{Op: OpTick, Now: t0 + int64(2*time.Second)}); !slices.Equal(granted(r), []uint64{b}) {
		t.Fatalf("events %v", r.Events)
	}
}

func TestSessionIDsComeFromACounterAndAreNeverReused(t *testing.T) {
	h := newHarness(t)
	var ids []uint64
	for i := range 5 {
		id := h.open(uint64(i % 2))
		ids = append(ids, id)
		if i%2 == 0 {
			h.apply(Command{Op: OpCloseSession, Session: id})
		}
	}
	if !slices.Equal(ids, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("session IDs %v", ids)
	}
	got := h.t.Sessions()
	if len(got) != 2 || got[0].ID != 2 || got[1].ID != 4 || got[0].TTL != 10*time.Second {
		t.Fatalf("Sessions() = %+v", got)
	}
}

func TestStatsCountEverything(t *testing.T) {
	h := newHarness(t)
	a, b, c := h.open(1), h.open(2), h.open(3)
	h.mustGrant(a, "x", true, time.Second)
	h.mustGrant(b, "x", true, 0)
	h.mustQueue(c, "x", false)
	h.mustGrant(a, "y", false, 0)
	want := Stats{Sessions: 3, Locks: 2, Holders: 3, Waiters: 1, LastToken: 3, LastSession: 3}
	if got := h.t.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	h.apply(Command{Op: OpExpireSession, Session: a})
	want = Stats{Sessions: 2, Locks: 1, Holders: 1, Waiters: 1, Delayed: 1, LastToken: 3, LastSession: 3}
	if got := h.t.Stats(); got != want {
		t.Fatalf("after expiry Stats = %+v, want %+v", got, want)
	}
	if s, ok := h.t.Session(b); !ok || s.Held != 1 || s.Client != 2 || s.Opened != t0 {
		t.Fatalf("Session(%d) = %+v, %v", b, s, ok)
	}
}

func TestLockInfoCopiesMetadata(t *testing.T) {
	h := newHarness(t)
	a := h.open(1)
	meta := []byte("owner=a")
	h.apply(Command{Op: OpAcquire, Session: a, Name: "x", Metadata: meta, LockDelay: time.Second})
	meta[0] = 'X' // the caller reuses its buffer
	info, _ := h.t.Lock("x")
	if string(info.Holders[0].Metadata) != "owner=a" || info.Holders[0].LockDelay != time.Second {
		t.Fatalf("LockInfo %+v", info)
	}
	info.Holders[0].Metadata[0] = 'Y'
	if again, _ := h.t.Lock("x"); string(again.Holders[0].Metadata) != "owner=a" {
		t.Fatal("LockInfo shares memory with the table")
	}
}

func TestLockDelaysEndingTogetherGrantInNameOrder(t *testing.T) {
	h := newHarness(t)
	a := h.open(1)
	names := []string{"e", "b", "d", "a", "c", "f"}
	for _, n := range names {
		h.mustGrant(a, n, false, time.Second)
	}
	for _, n := range names {
		h.mustQueue(h.open(2), n, false)
	}
	h.apply(Command{Op: OpExpireSession, Session: a})
	h.advance(time.Second)
	var order []string
	for _, e := range h.apply(Command{Op: OpTick}).Events {
		order = append(order, e.Name)
	}
	if !slices.Equal(order, []string{"a", "b", "c", "d", "e", "f"}) {
		t.Fatalf("lock-delays ending at one time granted in order %v, want name order", order)
	}
}

func TestLockDelayAtTheEndOfTimeDoesNotStick(t *testing.T) {
	h := newHarness(t)
	a, b := h.open(1), h.open(2)
	h.mustGrant(a, "x", false, time.Minute)
	h.mustQueue(b, "x", false)
	h.now = math.MaxInt64 // a deadline would saturate at the clock itself
	if r := h.apply(Command{Op: OpExpireSession, Session: a}); !slices.Equal(granted(r), []uint64{b}) {
		t.Fatalf("events %v, want the waiter granted", r.Events)
	}
	if err := New(DefaultLimits()).Restore(h.t.Snapshot()); err != nil {
		t.Fatal(err)
	}
}
