package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests run the client against three real nodes (internal/server) on
// 127.0.0.1. Each takes about a second or two.

func TestIntegrationAcquireReleaseTokensIncrease(t *testing.T) {
	tc := startCluster(t, 3, 4)
	c := tc.client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := c.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := 0; i < 20; i++ {
		l, err := s.Acquire(ctx, "a", LockOptions{Metadata: []byte("me")})
		if err != nil {
			t.Fatal(err)
		}
		if l.Token() <= last {
			t.Fatalf("round %d: token %d after %d: fencing tokens must increase", i, l.Token(), last)
		}
		last = l.Token()
		if ok, err := c.Validate(ctx, "a", l.Token()); err != nil || !ok {
			t.Fatalf("Validate of the holder's token: %v, %v", ok, err)
		}
		info, err := c.LockStatus(ctx, "a")
		if err != nil || !info.Held || len(info.Holders) != 1 || info.Holders[0].Token != l.Token() || string(info.Holders[0].Metadata) != "me" {
			t.Fatalf("LockStatus while held: %+v, %v", info, err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.Lost():
		default:
			t.Fatal("Lost is still open after Release")
		}
		if ok, err := c.Validate(ctx, "a", l.Token()); err != nil || ok {
			t.Fatalf("Validate after release: %v, %v", ok, err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// fencedResource accepts a write only with a token at least as new as the
// newest it has seen (per name), and counts refusals and overlapping
// holders.
type fencedResource struct {
	mu       sync.Mutex
	newest   map[string]uint64
	inside   map[string]int
	refused  int
	overlaps int
	writes   int
}

func (r *fencedResource) enter(name string, token uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if token < r.newest[name] {
		r.refused++
		return
	}
	r.newest[name] = token
	r.inside[name]++
	if r.inside[name] > 1 {
		r.overlaps++
	}
	r.writes++
}

func (r *fencedResource) leave(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inside[name]--
}

func TestIntegrationContendedLocksNeverOverlap(t *testing.T) {
	tc := startCluster(t, 3, 4)
	const clients, workers, rounds = 3, 4, 15
	names := []string{"x", "y"}
	res := &fencedResource{newest: map[string]uint64{}, inside: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients*workers)
	for ci := 0; ci < clients; ci++ {
		c := tc.client()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := c.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
				if err != nil {
					errs <- err
					return
				}
				defer s.Close(ctx)
				for i := 0; i < rounds; i++ {
					name := names[(w+i)%len(names)]
					l, err := s.Acquire(ctx, name, LockOptions{})
					if err != nil {
						errs <- fmt.Errorf("client %d worker %d: %w", ci, w, err)
						return
					}
					res.enter(name, l.Token())
					time.Sleep(time.Millisecond)
					res.leave(name)
					if err := l.Release(ctx); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if res.overlaps != 0 || res.refused != 0 || res.writes != clients*workers*rounds {
		t.Fatalf("overlaps %d, refused stale tokens %d, writes %d of %d", res.overlaps, res.refused, res.writes, clients*workers*rounds)
	}
}

func TestIntegrationWaitingAcquireIsGrantedByPush(t *testing.T) {
	tc := startCluster(t, 3, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := tc.client(), tc.client()
	sa, _ := a.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	sb, _ := b.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	la, err := sa.Acquire(ctx, "push", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.TryAcquire(ctx, "push", LockOptions{}); !errors.Is(err, ErrLockHeld) {
		t.Fatalf("TryAcquire of a held lock: %v, want ErrLockHeld", err)
	}
	got := make(chan *Lock, 1)
	go func() {
		l, err := sb.Acquire(ctx, "push", LockOptions{})
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	select {
	case <-got:
		t.Fatal("granted while another session holds the lock")
	case <-time.After(300 * time.Millisecond):
	}
	released := time.Now()
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case lb := <-got:
		if lb == nil || lb.Token() <= la.Token() {
			t.Fatalf("granted %v after token %d", lb, la.Token())
		}
		t.Logf("waiter granted %v after the release", time.Since(released))
	case <-time.After(time.Minute): // a hang guard; the grant takes one commit
		t.Fatal("the waiter was not granted within a minute of the release")
	}
}

// The client's Lost must close before the cluster grants the lock to
// anyone else when the holder's keep-alives stop.
func TestIntegrationLostClosesBeforeAnotherIsGranted(t *testing.T) {
	tc := startCluster(t, 3, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := tc.client(), tc.client()
	const ttl = 2 * time.Second
	sa, _ := a.NewSession(ctx, SessionOptions{TTL: ttl})
	sb, _ := b.NewSession(ctx, SessionOptions{TTL: ttl})
	la, err := sa.Acquire(ctx, "lost", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := la.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	granted := make(chan time.Time, 1)
	go func() {
		if _, err := sb.Acquire(ctx, "lost", LockOptions{}); err != nil {
			t.Error(err)
		}
		granted <- time.Now()
	}()
	stopped := time.Now()
	a.dropSends.Store(true) // a partition: keep-alives and the final close vanish
	var lostAt time.Time
	select {
	case <-la.Lost():
		lostAt = time.Now()
	case <-time.After(2*ttl + time.Minute): // a hang guard: Lost closes at the TTL
		t.Fatal("Lost did not close after keep-alives stopped")
	}
	select {
	case g := <-granted:
		if !g.After(lostAt) {
			t.Fatalf("another session was granted at %v, before Lost closed at %v", g.Sub(stopped), lostAt.Sub(stopped))
		}
		t.Logf("keep-alives stopped; Lost closed after %v, the next holder was granted after %v (lead %v)",
			lostAt.Sub(stopped), g.Sub(stopped), g.Sub(lostAt))
	case <-time.After(3*ttl + time.Minute): // a hang guard
		t.Fatal("the waiter was never granted after the holder's session expired")
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Renew of a lost lock: %v, want ErrLockLost", err)
	}
	select {
	case <-sa.Done():
	default:
		t.Fatal("the session is not Done after its lock was lost")
	}
}

func TestIntegrationWaiterFollowsFailover(t *testing.T) {
	tc := startCluster(t, 3, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := tc.client(), tc.client()
	sa, _ := a.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	sb, _ := b.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	la, err := sa.Acquire(ctx, "failover", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lock, 1)
	var waitErr atomic.Value
	go func() {
		l, err := sb.Acquire(ctx, "failover", LockOptions{})
		if err != nil {
			waitErr.Store(err)
		}
		got <- l
	}()
	time.Sleep(200 * time.Millisecond)
	st, err := a.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	master := int(st.Masters[0].Node)
	if master == 0 {
		t.Fatal("group 0 has no master")
	}
	start := time.Now()
	tc.stop(master - 1)
	if err := la.Release(ctx); err != nil {
		t.Fatalf("release after the master stopped: %v", err)
	}
	t.Logf("release across the failover took %v", time.Since(start))
	select {
	case lb := <-got:
		if lb == nil {
			t.Fatalf("waiter: %v", waitErr.Load())
		}
		if lb.Token() <= la.Token() {
			t.Fatalf("token %d after %d", lb.Token(), la.Token())
		}
		t.Logf("the waiter was granted %v after the master stopped", time.Since(start))
	case <-time.After(2 * time.Minute): // a hang guard: failover takes seconds
		t.Fatal("the waiter was not granted after the failover")
	}
}

func TestIntegrationWatchAndWatchMasters(t *testing.T) {
	tc := startCluster(t, 3, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := tc.client()
	events, err := c.Watch(ctx, "watched")
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); ev.Kind != EventSync || len(ev.Holders) != 0 {
		t.Fatalf("first event %+v, want a sync of a free lock", ev)
	}
	masters, err := c.WatchMasters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	current := map[uint32]MasterEvent{}
	for len(current) < 2 || current[0].Node == 0 { // right after start, a group may have no master yet
		ev := nextEvent(t, masters)
		if old, ok := current[ev.Group]; ok && ev.Epoch <= old.Epoch {
			t.Fatalf("event %+v does not follow epoch %d", ev, old.Epoch)
		}
		current[ev.Group] = ev
	}
	s, _ := c.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	l, err := s.Acquire(ctx, "watched", LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); ev.Kind != EventGranted || ev.Token != l.Token() || ev.Session != l.SessionID() ||
		ev.HolderCount != 1 || len(ev.Holders) != 1 || ev.Holders[0].Token != l.Token() || ev.Waiters != 0 {
		t.Fatalf("got %+v, want the grant of token %d, with that holder and no waiter", ev, l.Token())
	}
	// A change carries the lock's state after it: the queue while another
	// session waits, and the next holder when a release grants it.
	s2, err := c.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	granted := make(chan *Lock, 1)
	go func() {
		l2, err := s2.Acquire(ctx, "watched", LockOptions{})
		if err != nil {
			t.Error(err)
		}
		granted <- l2
	}()
	waitFor(t, time.Minute, "the second session waits", func() bool {
		info, err := c.LockStatus(ctx, "watched")
		return err == nil && info.Waiters == 1
	})
	l.Release(ctx)
	rel, grant := nextEvent(t, events), nextEvent(t, events)
	l2 := <-granted
	if rel.Kind != EventReleased || rel.Token != l.Token() || rel.HolderCount != 1 || len(rel.Holders) != 1 ||
		rel.Holders[0].Session != l2.SessionID() || rel.Holders[0].Token != l2.Token() || rel.Waiters != 0 {
		t.Fatalf("got %+v, want the release of token %d, then held by session %d (token %d) with nobody waiting", rel, l.Token(), l2.SessionID(), l2.Token())
	}
	if grant.Kind != EventGranted || grant.Session != l2.SessionID() || grant.HolderCount != 1 || grant.Holders[0].Token != l2.Token() {
		t.Fatalf("got %+v, want the grant to session %d with that holder", grant, l2.SessionID())
	}
	l2.Release(ctx)
	if ev := nextEvent(t, events); ev.Kind != EventReleased || ev.HolderCount != 0 || len(ev.Holders) != 0 || ev.Waiters != 0 {
		t.Fatalf("got %+v, want the release, leaving the lock free", ev)
	}

	// Stop the master of group 0: its master changes, in epoch order.
	old := current[0]
	if old.Node == 0 {
		t.Fatalf("group 0 has no master: %+v", old)
	}
	tc.stop(int(old.Node) - 1)
	deadline := time.After(time.Minute) // a hang guard; failover takes a few seconds
	for {
		select {
		case ev := <-masters:
			if ev.Epoch <= current[ev.Group].Epoch {
				t.Fatalf("event %+v does not follow epoch %d", ev, current[ev.Group].Epoch)
			}
			current[ev.Group] = ev
			if ev.Group == 0 && ev.Node != 0 && ev.Node != old.Node {
				return
			}
		case <-deadline:
			t.Fatalf("no new master for group 0 within a minute; last %+v", current[0])
		}
	}
}
