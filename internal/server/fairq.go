package server

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// fairQueue admits one group's client proposals into the Paxos pipeline
// fairly between identities (issue 10: one identity's flood must not slow
// another's acquires).
//
// Each identity may have at most its cap (proposals_in_flight) proposals in flight in the
// group; the rest wait, without using CPU, in the identity's own FIFO. The
// group as a whole admits at most total at once; when it is full, slots
// that free up go to the identities with waiting proposals in round-robin
// order (deficit round-robin with every request costing one). So an
// identity with nothing queued is admitted at once, however much another
// one sends, and its proposal rides the pipeline behind at most
// the cap's worth of proposals of each other identity instead of behind their
// whole backlog.
//
// Inside the pipeline, the commands of an identity that has nothing else in
// flight in the group (at most aheadInFlight, this one included) are
// proposed ahead (replica.ProposeAhead): they go into a new slot at once,
// before the queued commands of the identities that have more in flight,
// so a light identity's command waits for the rounds already in flight,
// not for the next batch of a flood. Only an identity's first
// aheadInFlight commands in flight get this, so an identity cannot flood
// ahead: a flood's commands are almost all queued behind its first. (The
// handler also asks that the command be its identity's only one in flight
// on the node, identityState.enterProposal, before it proposes it ahead.)
//
// While a light identity competes with a heavy one (a proposal of an
// identity with nothing else in flight was admitted while another identity
// had more than aheadInFlight in flight), every identity's cap is lowered
// to contendedInFlight, for contendedFor after the latest such admission:
// the heavy identity keeps a short pipeline, so the light one's command
// shares the rounds, the fsyncs and the CPU with few of its commands. An
// identity alone in the group keeps its full cap, so a single client's
// throughput (lockctl bench) is not held back.
//
// Invariants (under mu): inflight is the sum of the identities' inflight;
// heavy is the number of identities with more than aheadInFlight in
// flight; an identity is in ring exactly when it has waiters; an identity
// with no waiters and nothing in flight is not in ids.
type fairQueue struct {
	total      int
	maxWaiting int
	now        func() time.Time // time.Now; tests set it

	// contended is when a light identity was last admitted while a heavy
	// one had more than aheadInFlight in flight (under mu).
	contended time.Time

	mu       sync.Mutex
	inflight int
	heavy    int // identities with more than aheadInFlight in flight
	ids      map[string]*fqIdentity
	ring     []*fqIdentity
	next     int // the ring position served first by the next dispatch
}

type fqIdentity struct {
	name     string
	cap      int // its in-flight cap, as of its latest enter
	inflight int
	waiting  []*fqTicket
}

// fqTicket is one waiting proposal; admit is closed when it is admitted.
type fqTicket struct {
	admit    chan struct{}
	admitted bool // under fairQueue.mu
	ahead    bool // under fairQueue.mu: set when admitted (see aheadInFlight)
}

// aheadInFlight is how many commands of an identity in one group, counting
// the one being admitted, may be proposed ahead of the queue (see
// fairQueue): one, so that an identity that sends one command at a time
// always gets it, and one that floods gets it for its first command only.
const aheadInFlight = 1

// contendedInFlight is every identity's cap in one group while a light
// identity competes there with a heavy one, for contendedFor after the
// light one's latest admission (see fairQueue). 2 keeps a flood's pipeline
// going (one command in a round, one waiting to be proposed) on a few
// commands: on the 2-core test machine, BenchmarkFloodIsolation's victim
// p99 ratio went from 4.0 with the flood at 8 per group to 2.7 at 2
// (docs/benchmarks.md section 8).
const (
	contendedInFlight = 2
	contendedFor      = time.Second
)

func newFairQueue(total, maxWaiting int) *fairQueue {
	return &fairQueue{total: total, maxWaiting: maxWaiting, ids: map[string]*fqIdentity{}, now: time.Now}
}

// capOf is id's cap now: its own, or contendedInFlight while a light
// identity competes with a heavy one.
func (q *fairQueue) capOf(id *fqIdentity, now time.Time) int {
	if !q.contended.IsZero() && now.Sub(q.contended) < contendedFor {
		return min(id.cap, contendedInFlight)
	}
	return id.cap
}

// admitted counts one more proposal of id in flight and tells whether it
// goes ahead (aheadInFlight); a light identity admitted while another is
// heavy starts or extends the contended period.
func (q *fairQueue) admitted(id *fqIdentity, now time.Time) (ahead bool) {
	id.inflight++
	q.inflight++
	if id.inflight > aheadInFlight {
		if id.inflight == aheadInFlight+1 {
			q.heavy++
		}
		return false
	}
	if q.heavy > 0 { // another identity: this one is light
		q.contended = now
	}
	return true
}

// errQueueFull refuses a proposal when its identity already has
// maxWaiting waiting in the group; nothing was proposed, so the caller may
// retry later.
type errQueueFull struct {
	who     string
	waiting int
}

func (e errQueueFull) Error() string {
	return fmt.Sprintf("identity %s already has %d commands waiting for their turn in this group, the most one identity may queue", e.who, e.waiting)
}

// enter waits until who may propose, or ctx ends. On success the caller
// must call leave once its proposal is done.
func (q *fairQueue) enter(ctx context.Context, who string, perIdentity int) error {
	_, err := q.enterAhead(ctx, who, perIdentity)
	return err
}

// enterAhead is enter, and also says whether the admitted proposal should
// be proposed ahead of the group's queue (replica.ProposeAhead): whether
// who has at most aheadInFlight proposals in flight in the group with it.
func (q *fairQueue) enterAhead(ctx context.Context, who string, perIdentity int) (ahead bool, err error) {
	q.mu.Lock()
	id := q.ids[who]
	if id == nil {
		id = &fqIdentity{name: who}
		q.ids[who] = id
	}
	id.cap = perIdentity
	now := q.now()
	if len(id.waiting) == 0 && id.inflight < q.capOf(id, now) && q.inflight < q.total {
		ahead := q.admitted(id, now)
		q.mu.Unlock()
		return ahead, nil
	}
	if len(id.waiting) >= q.maxWaiting {
		n := len(id.waiting)
		q.mu.Unlock()
		return false, errQueueFull{who: who, waiting: n}
	}
	t := &fqTicket{admit: make(chan struct{})}
	id.waiting = append(id.waiting, t)
	if len(id.waiting) == 1 {
		q.ring = append(q.ring, id)
	}
	q.mu.Unlock()
	select {
	case <-t.admit:
		q.mu.Lock()
		ahead := t.ahead
		q.mu.Unlock()
		return ahead, nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.admitted {
		// Admitted as ctx ended: give the place back.
		q.leaveLocked(id)
		return false, ctx.Err()
	}
	for i, w := range id.waiting {
		if w == t {
			id.waiting = append(id.waiting[:i], id.waiting[i+1:]...)
			break
		}
	}
	if len(id.waiting) == 0 {
		q.dropFromRing(id)
	}
	q.forget(id)
	return false, ctx.Err()
}

// leave ends one admitted proposal of who and admits waiting ones.
func (q *fairQueue) leave(who string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if id := q.ids[who]; id != nil {
		q.leaveLocked(id)
	}
}

func (q *fairQueue) leaveLocked(id *fqIdentity) {
	if id.inflight == aheadInFlight+1 {
		q.heavy--
	}
	id.inflight--
	q.inflight--
	q.dispatch()
	q.forget(id)
}

// dispatch admits waiting proposals, one per identity per turn of the
// ring, while the group has room and the identity is under its own cap.
func (q *fairQueue) dispatch() {
	now := q.now()
	for q.inflight < q.total && len(q.ring) > 0 {
		progressed := false
		for n := len(q.ring); n > 0 && q.inflight < q.total && len(q.ring) > 0; n-- {
			if q.next >= len(q.ring) {
				q.next = 0
			}
			id := q.ring[q.next]
			if id.inflight >= q.capOf(id, now) {
				q.next++
				continue
			}
			t := id.waiting[0]
			id.waiting = id.waiting[1:]
			t.admitted = true
			t.ahead = q.admitted(id, now)
			close(t.admit)
			progressed = true
			if len(id.waiting) == 0 {
				q.dropFromRing(id) // the next identity slides into q.next
			} else {
				q.next++
			}
		}
		if !progressed {
			return
		}
	}
}

func (q *fairQueue) dropFromRing(id *fqIdentity) {
	for i, r := range q.ring {
		if r == id {
			q.ring = append(q.ring[:i], q.ring[i+1:]...)
			if i < q.next {
				q.next--
			}
			return
		}
	}
}

func (q *fairQueue) forget(id *fqIdentity) {
	if id.inflight == 0 && len(id.waiting) == 0 {
		delete(q.ids, id.name)
	}
}
