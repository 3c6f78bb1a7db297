package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// hang bounds every wait of these tests; none should come near it.
const hang = 30 * time.Second

// enterAsync starts q.enter for who and returns a channel that gets its
// result once admitted (or refused).
func enterAsync(ctx context.Context, q *fairQueue, who string, cap int) <-chan error {
	c := make(chan error, 1)
	go func() { c <- q.enter(ctx, who, cap) }()
	return c
}

// waitingOf is how many proposals of who wait, read under the lock.
func waitingOf(q *fairQueue, who string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if id := q.ids[who]; id != nil {
		return len(id.waiting)
	}
	return 0
}

// untilWaiting waits (bounded) until who has n proposals waiting.
func untilWaiting(t *testing.T, q *fairQueue, who string, n int) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for waitingOf(q, who) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d waiting, want %d", who, waitingOf(q, who), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func admitted(t *testing.T, c <-chan error, what string) {
	t.Helper()
	select {
	case err := <-c:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(hang):
		t.Fatalf("%s: not admitted", what)
	}
}

func notAdmitted(t *testing.T, c <-chan error, what string) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("%s: admitted (%v), want it to wait", what, err)
	default:
	}
}

// TestFairQueueOtherIdentityNotBehindBacklog is issue 10's flood rule at
// the admission step: while one identity has its cap in flight and a
// backlog waiting, another identity's proposal is admitted at once.
func TestFairQueueOtherIdentityNotBehindBacklog(t *testing.T) {
	ctx := context.Background()
	q := newFairQueue(1024, 4096)
	clock := newFakeNow()
	q.now = clock.now
	for i := 0; i < 4; i++ {
		if err := q.enter(ctx, "flooder", 4); err != nil {
			t.Fatal(err)
		}
	}
	var backlog []<-chan error
	for i := 0; i < 100; i++ {
		backlog = append(backlog, enterAsync(ctx, q, "flooder", 4))
		untilWaiting(t, q, "flooder", i+1) // queued in this order
	}
	vctx, cancel := context.WithTimeout(ctx, hang)
	defer cancel()
	if err := q.enter(vctx, "victim", 4); err != nil {
		t.Fatalf("victim: %v (it waited behind the flooder)", err)
	}
	if n := waitingOf(q, "flooder"); n != 100 {
		t.Errorf("flooder has %d waiting after the victim's admission, want 100", n)
	}
	q.leave("victim")
	// Once the victim's contended period is over (TestFairQueueContendedCap),
	// the flooder's backlog goes through in order as its own proposals end.
	clock.add(contendedFor)
	for i, c := range backlog {
		q.leave("flooder")
		admitted(t, c, "flooder's waiting proposal")
		if i+1 < len(backlog) {
			notAdmitted(t, backlog[i+1], "the next one before another leave")
		}
	}
	for i := 0; i < 4; i++ {
		q.leave("flooder")
	}
	if len(q.ids) != 0 || q.inflight != 0 || len(q.ring) != 0 {
		t.Errorf("queue not empty at the end: %d identities, %d in flight, ring %d", len(q.ids), q.inflight, len(q.ring))
	}
}

// TestFairQueueRoundRobinWhenGroupFull: when the group's total is reached,
// freed places go to the waiting identities in turn, not to whichever
// queued most.
func TestFairQueueRoundRobinWhenGroupFull(t *testing.T) {
	ctx := context.Background()
	q := newFairQueue(2, 4096)
	for i := 0; i < 2; i++ {
		if err := q.enter(ctx, "a", 100); err != nil {
			t.Fatal(err)
		}
	}
	var as, bs []<-chan error
	for i := 0; i < 6; i++ {
		as = append(as, enterAsync(ctx, q, "a", 100))
		untilWaiting(t, q, "a", i+1)
	}
	for i := 0; i < 3; i++ {
		bs = append(bs, enterAsync(ctx, q, "b", 100))
		untilWaiting(t, q, "b", i+1)
	}
	// Each leave frees one place; b must get every other one although a
	// queued first and twice as much.
	order, inflight := "", []string{"a", "a"}
	for len(as)+len(bs) > 0 {
		q.leave(inflight[0]) // the oldest proposal in flight ends
		inflight = inflight[1:]
		select {
		case <-firstOf(as):
			as = as[1:]
			order += "a"
			inflight = append(inflight, "a")
		case <-firstOf(bs):
			bs = bs[1:]
			order += "b"
			inflight = append(inflight, "b")
		case <-time.After(hang):
			t.Fatalf("nothing admitted after a leave (order so far %q)", order)
		}
	}
	if want := "abababaaa"; order != want {
		t.Errorf("admission order %q, want %q", order, want)
	}
}

// firstOf is the head of cs, or a nil channel (never ready) when empty.
func firstOf(cs []<-chan error) <-chan error {
	if len(cs) == 0 {
		return nil
	}
	return cs[0]
}

// TestFairQueueCancelAndFull: a waiting proposal whose context ends leaves
// the queue without taking a place, and past maxWaiting a proposal is
// refused at once with an error that names the identity.
func TestFairQueueCancelAndFull(t *testing.T) {
	q := newFairQueue(1024, 2)
	ctx := context.Background()
	if err := q.enter(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	c1 := enterAsync(cctx, q, "a", 1)
	untilWaiting(t, q, "a", 1)
	c2 := enterAsync(ctx, q, "a", 1)
	untilWaiting(t, q, "a", 2)
	err := q.enter(ctx, "a", 1)
	var full errQueueFull
	if !errors.As(err, &full) || full.who != "a" || full.waiting != 2 {
		t.Fatalf("a third waiting proposal: %v, want errQueueFull for a with 2 waiting", err)
	}
	cancel()
	if err := <-c1; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	untilWaiting(t, q, "a", 1)
	q.leave("a")
	admitted(t, c2, "the proposal behind the cancelled one")
	q.leave("a")
	if len(q.ids) != 0 || q.inflight != 0 {
		t.Errorf("queue not empty: %d identities, %d in flight", len(q.ids), q.inflight)
	}
}

// TestFairQueueAheadOnlyForLightIdentity: a proposal is proposed ahead of
// the group's queue (replica.ProposeAhead) exactly when its identity has
// nothing else in flight in the group: always for one that sends one at a
// time, for a flood only its first; also when a waiting proposal is
// admitted (the group was full) and its identity had nothing in flight.
func TestFairQueueAheadOnlyForLightIdentity(t *testing.T) {
	ctx := context.Background()
	q := newFairQueue(3, 4096)
	enter := func(who string) bool {
		t.Helper()
		ahead, err := q.enterAhead(ctx, who, 8)
		if err != nil {
			t.Fatal(err)
		}
		return ahead
	}
	if !enter("flooder") {
		t.Fatal("the flooder's first proposal, alone in flight, was not ahead")
	}
	for i := 0; i < 2; i++ {
		if enter("flooder") {
			t.Fatalf("the flooder's proposal with %d others in flight went ahead", i+1)
		}
	}
	// The group is full: the victim waits, then is admitted round robin
	// with nothing else of its own in flight.
	type res struct {
		ahead bool
		err   error
	}
	c := make(chan res, 1)
	go func() {
		ahead, err := q.enterAhead(ctx, "victim", 8)
		c <- res{ahead, err}
	}()
	untilWaiting(t, q, "victim", 1)
	q.leave("flooder")
	select {
	case r := <-c:
		if r.err != nil || !r.ahead {
			t.Fatalf("the victim admitted from the queue: ahead %v, err %v; want ahead", r.ahead, r.err)
		}
	case <-time.After(hang):
		t.Fatal("the victim was not admitted")
	}
	q.leave("victim")
	if !enter("victim") {
		t.Fatal("the victim, with nothing else in flight, was not ahead")
	}
	q.leave("victim")
	q.leave("flooder")
	q.leave("flooder")
	if !enter("flooder") {
		t.Fatal("the flooder, with nothing left in flight, was not ahead")
	}
	q.leave("flooder")
	if len(q.ids) != 0 || q.inflight != 0 {
		t.Errorf("queue not empty: %d identities, %d in flight", len(q.ids), q.inflight)
	}
}

// fakeNow is a clock for fairQueue.now that moves only when told.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeNow() *fakeNow { return &fakeNow{t: time.Unix(1_000_000, 0)} }

func (f *fakeNow) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// TestFairQueueContendedCap: once a light identity is admitted while a
// heavy one has more than aheadInFlight in flight, every identity is held
// to contendedInFlight for contendedFor; an identity alone, or two light
// ones, keep their caps.
func TestFairQueueContendedCap(t *testing.T) {
	ctx := context.Background()
	q := newFairQueue(1024, 4096)
	clock := newFakeNow()
	q.now = clock.now
	enter := func(who string) {
		t.Helper()
		if err := q.enter(ctx, who, 8); err != nil {
			t.Fatal(err)
		}
	}
	// Alone, the flooder fills its cap of 8.
	for i := 0; i < 8; i++ {
		enter("flooder")
	}
	// Another light identity alongside a light one contends with nobody.
	for i := 0; i < 8; i++ {
		q.leave("flooder")
	}
	enter("flooder")
	enter("victim")
	enter("flooder")
	c := enterAsync(ctx, q, "flooder", 8)
	admitted(t, c, "the flooder's third, with the victim light as it")
	for i := 0; i < 3; i++ {
		q.leave("flooder")
	}
	q.leave("victim")
	// The victim comes while the flooder is heavy: the flooder, at 5 in
	// flight, gets nothing more until it is below 2.
	for i := 0; i < 5; i++ {
		enter("flooder")
	}
	enter("victim")
	q.leave("victim")
	var waiting []<-chan error
	for i := 0; i < 3; i++ {
		waiting = append(waiting, enterAsync(ctx, q, "flooder", 8))
		untilWaiting(t, q, "flooder", i+1)
	}
	for i := 0; i < 3; i++ {
		q.leave("flooder")
		notAdmitted(t, waiting[0], fmt.Sprintf("the flooder's waiting proposal with %d in flight, while contended", 4-i))
	}
	q.leave("flooder") // 1 in flight: one more is admitted, up to 2
	admitted(t, waiting[0], "the flooder's waiting proposal at 1 in flight")
	notAdmitted(t, waiting[1], "the flooder's next, at 2 in flight while contended")
	// The period ends contendedFor after the victim's admission: the next
	// leave admits up to the flooder's own cap again.
	clock.add(contendedFor)
	q.leave("flooder")
	admitted(t, waiting[1], "the flooder's waiting proposal after the contended period")
	admitted(t, waiting[2], "the flooder's last waiting proposal after the contended period")
	for i := 0; i < 3; i++ {
		q.leave("flooder")
	}
	if len(q.ids) != 0 || q.inflight != 0 {
		t.Errorf("queue not empty: %d identities, %d in flight", len(q.ids), q.inflight)
	}
}

// checkFairQueueCounts checks the fairQueue invariants on its counters:
// inflight is the sum of the identities' inflight, heavy the number of
// identities with more than aheadInFlight in flight.
func checkFairQueueCounts(t *testing.T, q *fairQueue) {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	sum, heavy := 0, 0
	for _, id := range q.ids {
		sum += id.inflight
		if id.inflight > aheadInFlight {
			heavy++
		}
	}
	if sum != q.inflight || heavy != q.heavy {
		t.Fatalf("fair queue counters: inflight %d (identities sum to %d), heavy %d (identities say %d)", q.inflight, sum, q.heavy, heavy)
	}
}

// TestFairQueueHeavyCount: the count of heavy identities, which tells
// without scanning every identity whether a light one competes with a
// heavy one (and so starts the contended period), follows admissions and
// leaves of several identities in any order.
func TestFairQueueHeavyCount(t *testing.T) {
	ctx := context.Background()
	clock := &fakeNow{t: time.Unix(1000, 0)}
	q := newFairQueue(1000, 4096)
	q.now = clock.now
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "c", "d"}
	held := map[string]int{}
	contended := 0
	for step := range 2000 {
		// Each step starts after the contended period of the last, so
		// that no admission waits.
		clock.add(contendedFor)
		who := names[rng.IntN(len(names))]
		if held[who] > 0 && rng.IntN(2) == 0 {
			q.leave(who)
			held[who]--
		} else if held[who] < 6 {
			othersHeavy := false
			for _, o := range names {
				if o != who && held[o] > aheadInFlight {
					othersHeavy = true
				}
			}
			ahead, err := q.enterAhead(ctx, who, 8)
			if err != nil {
				t.Fatal(err)
			}
			held[who]++
			light := held[who] <= aheadInFlight
			q.mu.Lock()
			started := q.contended.Equal(clock.now())
			q.mu.Unlock()
			if ahead != light || started != (light && othersHeavy) {
				t.Fatalf("step %d: %s with %d in flight, another heavy %v: ahead %v, contended period started %v", step, who, held[who], othersHeavy, ahead, started)
			}
			if started {
				contended++
			}
		}
		checkFairQueueCounts(t, q)
	}
	if contended == 0 {
		t.Fatal("no light admission next to a heavy identity in 2000 steps")
	}
}
