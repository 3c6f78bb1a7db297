package lease

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkApplyAcquireRelease measures one uncontended acquire and its release (two
// Applies) on a table that already holds 10,000 other locks.
func BenchmarkApplyAcquireRelease(b *testing.B) {
	t := heldTable(b, 10_000)
	pos, _ := t.Applied()
	slot := pos.Slot + 1
	s := t.Apply(Position{Slot: slot}, Command{Op: OpOpenSession, Now: t0, Client: 9, TTL: time.Minute}).Session
	names := make([]string, 1024)
	for i := range names {
		names[i] = fmt.Sprintf("bench/lock/%04d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		name := names[i%len(names)]
		slot++
		r := t.Apply(Position{Slot: slot}, Command{Op: OpAcquire, Now: t0, Session: s, Name: name})
		slot++
		t.Apply(Position{Slot: slot}, Command{Op: OpRelease, Now: t0, Session: s, Name: name, Token: r.Token})
	}
}

// BenchmarkApplyHandoff measures a release that grants the lock to a waiter, and the
// old holder queueing again: the contended path.
func BenchmarkApplyHandoff(b *testing.B) {
	h := newHarness(b)
	s := [2]uint64{h.open(1), h.open(2)}
	tok := h.mustGrant(s[0], "hot", false, 0)
	h.mustQueue(s[1], "hot", false)
	t, slot := h.t, h.slot
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		holder := s[i%2]
		slot++
		r := t.Apply(Position{Slot: slot}, Command{Op: OpRelease, Now: t0, Session: holder, Name: "hot", Token: tok})
		tok = r.Events[1].Token
		slot++
		t.Apply(Position{Slot: slot}, Command{Op: OpAcquire, Now: t0, Session: holder, Name: "hot", Wait: true})
	}
}

func BenchmarkDecodeCommand(b *testing.B) {
	in := Command{Op: OpAcquire, Now: t0, Session: 12345, Name: "service/db/primary", Wait: true, LockDelay: time.Second}.Encode()
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for range b.N {
		if _, err := DecodeCommand(in); err != nil {
			b.Fatal(err)
		}
	}
}

// heldTable returns a table holding n exclusive locks with names of 16 bytes, spread
// over n/100 sessions (100 locks per session).
func heldTable(tb testing.TB, n int) *Table {
	t := New(DefaultLimits())
	slot := uint64(0)
	apply := func(c Command) Result {
		slot++
		c.Now = t0
		return t.Apply(Position{Slot: slot}, c)
	}
	var s uint64
	for i := range n {
		if i%100 == 0 {
			s = apply(Command{Op: OpOpenSession, Client: uint64(i / 100_000), TTL: 10 * time.Second}).Session
		}
		if r := apply(Command{Op: OpAcquire, Session: s, Name: fmt.Sprintf("svc/lock/%07d", i)}); r.Code != CodeOK {
			tb.Fatal(r.Err())
		}
	}
	return t
}

// bytesPerHeldLock builds a table of n held locks and returns the heap it uses per lock,
// sessions and maps included.
func bytesPerHeldLock(tb testing.TB, n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t := heldTable(tb, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if t.Stats().Holders != n {
		tb.Fatal("not all locks held")
	}
	runtime.KeepAlive(t)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestMemoryPerHeldLock holds the budget: 1,000,000 held locks and 100,000 sessions
// under 1 GiB per node leaves about 1 KiB per lock for everything; the table must take a
// small part of it.
func TestMemoryPerHeldLock(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 200,000 locks")
	}
	const n, budget = 200_000, 400
	per := bytesPerHeldLock(t, n)
	t.Logf("%.0f bytes per held lock (%d locks, 100 per session, 16-byte names)", per, n)
	if per > budget {
		t.Fatalf("%.0f bytes per held lock, the budget is %d", per, budget)
	}
}

func BenchmarkHeldLockMemory(b *testing.B) {
	for range b.N {
		b.ReportMetric(bytesPerHeldLock(b, 200_000), "B/lock")
	}
}

func BenchmarkSnapshot200k(b *testing.B) {
	t := heldTable(b, 200_000)
	b.ReportAllocs()
	b.ResetTimer()
	var n int
	for range b.N {
		n = len(t.Snapshot())
	}
	b.ReportMetric(float64(n), "bytes")
}

func BenchmarkRestore200k(b *testing.B) {
	snap := heldTable(b, 200_000).Snapshot()
	b.ReportAllocs()
	b.SetBytes(int64(len(snap)))
	b.ResetTimer()
	for range b.N {
		if err := New(DefaultLimits()).Restore(snap); err != nil {
			b.Fatal(err)
		}
	}
}
