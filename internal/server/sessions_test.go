package server

import (
	"slices"
	"testing"
	"time"

	"github.com/lockd/lockd/lease"
)

// TestOwnCommandsNeverAcknowledgeOneInFlight: the Ack of a new command stays
// at or below every sequence number still in flight, so a command that lands
// after a later one is still applied.
func TestOwnCommandsNeverAcknowledgeOneInFlight(t *testing.T) {
	ids := newCommandIDs(1)
	s1, _ := ids.next()
	s2, ack2 := ids.next()
	if ack2 > s1 {
		t.Fatalf("seq %d acknowledged %d while %d is in flight", s2, ack2, s1)
	}
	ids.done(s1)
	s3, ack3 := ids.next()
	if ack3 > s2 {
		t.Fatalf("seq %d acknowledged %d while %d is in flight", s3, ack3, s2)
	}
	ids.done(s2)
	ids.done(s3)
	s4, ack4 := ids.next()
	if ack4 != s4 {
		t.Fatalf("nothing in flight: ack %d, want %d", ack4, s4)
	}
}

// TestGroupClockExpiresOnlySilentSessions: a session is due once it has not
// been heard from for longer than its TTL; a keep-alive that came in between
// (which does not touch the heap) moves it back; a master's grace never
// counts from before a sign of life it saw.
func TestGroupClockExpiresOnlySilentSessions(t *testing.T) {
	t0 := time.Unix(1000, 0)
	gc := &groupClock{entries: map[uint64]*clockEntry{}}
	gc.touch(1, 3*time.Second, t0)
	gc.touch(2, 3*time.Second, t0)
	gc.touch(3, 10*time.Second, t0)
	if got := gc.expired(t0.Add(3*time.Second), 10); len(got) != 0 {
		t.Fatalf("expired at exactly the TTL: %v, want none", got)
	}
	gc.touch(2, 3*time.Second, t0.Add(2*time.Second)) // a keep-alive
	if got := gc.expired(t0.Add(3*time.Second+time.Millisecond), 10); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("expired %v just after the TTL, want [1] (2 kept alive, 3 has a longer TTL)", got)
	}
	if got := gc.expired(t0.Add(3*time.Second+2*time.Millisecond), 10); len(got) != 0 {
		t.Fatalf("session 1 proposed again at once: %v; want a retry only after %v", got, expireRetry)
	}
	gc.remove(1) // its expiry was applied
	if got := gc.expired(t0.Add(5*time.Second+time.Millisecond), 10); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("expired %v after 2's TTL from its keep-alive, want [2]", got)
	}
	// Session 2's expiry was lost. A new master serves from t0+20s with
	// grace from t0+15s; it heard from session 3 at t0+18s.
	gc.touch(3, 10*time.Second, t0.Add(18*time.Second))
	gc.grace(t0.Add(15 * time.Second))
	if got := gc.expired(t0.Add(18*time.Second), 10); len(got) != 0 {
		t.Fatalf("expired %v at t0+18s: the grace from t0+15s with TTL 3s ends then, not before", got)
	}
	if got := gc.expired(t0.Add(27*time.Second), 10); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("expired %v at t0+27s, want [2]: session 3 was heard from at t0+18s with TTL 10s", got)
	}
	if got := gc.expired(t0.Add(27500*time.Millisecond), 10); len(got) != 0 {
		t.Fatalf("expired %v at t0+27.5s, want none (2 waits %v for its retry)", got, expireRetry)
	}
	got := gc.expired(t0.Add(28*time.Second+time.Millisecond), 10)
	slices.Sort(got)
	if !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("expired %v just after t0+28s, want [2 3] (2's retry, 3's TTL)", got)
	}
}

// BenchmarkExpiryRound compares one expiry round over 500,000 live sessions
// of one group, none due: the session clock's heap against the full table
// scan it replaced (a copy of every session, as rounds did before).
func BenchmarkExpiryRound(b *testing.B) {
	const n = 500_000
	now := time.Unix(1000, 0)
	table := lease.New(lease.DefaultLimits())
	gc := &groupClock{entries: map[uint64]*clockEntry{}}
	for i := range n {
		res := table.Apply(lease.Position{Slot: uint64(i + 1)}, lease.Command{Op: lease.OpOpenSession, Now: now.UnixNano(), Client: uint64(i + 1), TTL: time.Minute})
		if res.Code != lease.CodeOK {
			b.Fatalf("open session %d: %v", i, res.Err())
		}
		gc.touch(res.Session, time.Minute, now)
	}
	b.Run("heap", func(b *testing.B) {
		for b.Loop() {
			if got := gc.expired(now.Add(time.Second), maxExpirePerRound); len(got) != 0 {
				b.Fatal(got)
			}
		}
	})
	b.Run("table-scan", func(b *testing.B) {
		for b.Loop() {
			if len(table.Sessions()) != n {
				b.Fatal("lost sessions")
			}
		}
	})
}
