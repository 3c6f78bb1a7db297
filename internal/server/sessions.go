package server

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
)

// sessionClock is the master's record of when it last heard from each
// session, on its own monotonic clock. It is not replicated: expiry is
// decided here and replicated as an explicit OpExpireSession.
//
// Every node keeps an entry per open session (added and removed as the
// commands that open and end sessions are applied), so that a node that
// becomes master knows them all without scanning its tables. Entries wait
// in a heap ordered by when they are due to be looked at, so that one
// expiry round costs O(expired · log n), not a copy of every session: with
// half a million sessions a full scan every ExpiryInterval took a third of
// a node's CPU (docs/memory.md).
type sessionClock struct {
	mu      sync.Mutex
	groups  map[paxos.GroupID]*groupClock
	serving map[paxos.GroupID]bool
}

// groupClock is one group's sessions. An entry's seen only grows; its due
// time may lag behind seen+ttl (keep-alives do not touch the heap) and is
// corrected when it comes up.
type groupClock struct {
	entries map[uint64]*clockEntry
	heap    clockHeap
}

type clockEntry struct {
	id   uint64
	seen time.Time // last sign of life: keep-alive, open, or a master's grace
	ttl  time.Duration
	due  time.Time // heap key: not expired before this
	idx  int       // position in the heap
}

// expireRetry is how long an expiry that was proposed waits before it is
// proposed again if its session is still there (the proposal was lost).
const expireRetry = time.Second

// maxExpirePerRound bounds the sessions one round expires in one group.
const maxExpirePerRound = 4096

func newSessionClock() *sessionClock {
	return &sessionClock{groups: map[paxos.GroupID]*groupClock{}, serving: map[paxos.GroupID]bool{}}
}

func (c *sessionClock) group(g paxos.GroupID) *groupClock {
	gc := c.groups[g]
	if gc == nil {
		gc = &groupClock{entries: map[uint64]*clockEntry{}}
		c.groups[g] = gc
	}
	return gc
}

// seen records a sign of life of session at now (ttl is the session's, for
// an entry that does not exist yet).
func (c *sessionClock) seen(g paxos.GroupID, session uint64, ttl time.Duration, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.group(g).touch(session, ttl, now)
}

// ended forgets a session that was closed or expired.
func (c *sessionClock) ended(g paxos.GroupID, session uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.group(g).remove(session)
}

func (gc *groupClock) remove(session uint64) {
	if e, ok := gc.entries[session]; ok {
		delete(gc.entries, session)
		heap.Remove(&gc.heap, e.idx)
	}
}

func (gc *groupClock) touch(session uint64, ttl time.Duration, now time.Time) {
	if e, ok := gc.entries[session]; ok {
		if now.After(e.seen) {
			e.seen = now
		}
		return
	}
	e := &clockEntry{id: session, seen: now, ttl: ttl, due: now.Add(ttl)}
	gc.entries[session] = e
	heap.Push(&gc.heap, e)
}

// grace starts every session's count at from at the latest, keeping later
// signs of life: called when this node starts serving the group.
func (gc *groupClock) grace(from time.Time) {
	for _, e := range gc.entries {
		if e.seen.Before(from) {
			e.seen = from
		}
		e.due = e.seen.Add(e.ttl)
	}
	heap.Init(&gc.heap)
}

// expired returns sessions not heard from for longer than their TTL at now,
// at most limit of them. Each is put back with a retry time, in case its
// expiry is lost; ended removes it once the expiry is applied.
func (gc *groupClock) expired(now time.Time, limit int) []uint64 {
	var out []uint64
	for len(gc.heap) > 0 && !gc.heap[0].due.After(now) && len(out) < limit {
		e := gc.heap[0]
		if end := e.seen.Add(e.ttl); !now.After(end) {
			e.due = end.Add(time.Nanosecond) // heard from since: look again then
		} else {
			out = append(out, e.id)
			e.due = now.Add(expireRetry)
		}
		heap.Fix(&gc.heap, 0)
	}
	return out
}

// clockHeap orders entries by due time (container/heap).
type clockHeap []*clockEntry

func (h clockHeap) Len() int           { return len(h) }
func (h clockHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h clockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *clockHeap) Push(x any) {
	e := x.(*clockEntry)
	e.idx = len(*h)
	*h = append(*h, e)
}
func (h *clockHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// expireLoop is the master's side of session expiry and lock-delay: for every
// group this node serves, it expires sessions it has not heard from for
// their TTL, and ticks tables whose lock-delay ended. When the node starts
// serving a group, every session gets a full TTL of grace (as in Chubby),
// counted from when the previous master stopped serving by this node's
// conservative count (election.Elector.PredecessorEnd), because keep-alives
// went to the old master until then and to nobody since.
func (s *Server) expireLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := s.now()
			for g := range s.groups {
				s.expireGroup(ctx, paxos.GroupID(g), now)
			}
		}
	}
}

func (s *Server) expireGroup(ctx context.Context, g paxos.GroupID, now time.Time) {
	serving := s.elector.Serving(g, now)
	c := s.sessions
	c.mu.Lock()
	was := c.serving[g]
	c.serving[g] = serving
	if !serving {
		c.mu.Unlock()
		return
	}
	gc := c.group(g)
	if !was {
		// Once per master change, make sure every session of the table
		// is tracked (the apply hook adds them; this guards the rule that
		// every session expires).
		gs := s.groups[g]
		gs.mu.Lock()
		for _, si := range gs.table.Sessions() {
			gc.touch(si.ID, si.TTL, time.Time{})
		}
		gs.mu.Unlock()
		// Grace: keep-alives went to the previous master until it stopped
		// serving, so count every session's TTL from then. Nothing was
		// answered for g after that (this node waited it out before
		// serving), so no TTL can have been extended later; signs of life
		// this node saw since stay, as a TTL must never count from before
		// a keep-alive that was answered.
		from := now
		if end := s.elector.PredecessorEnd(g); !end.IsZero() && end.Before(now) {
			from = end
		}
		gc.grace(from)
	}
	if s.floorPending(g) {
		// A restored group raises its token floor before anything else
		// (floor.go); its sessions wait, with the grace above.
		c.mu.Unlock()
		s.proposeOwn(ctx, g, floorCommand(now))
		return
	}
	due := gc.expired(now, maxExpirePerRound)
	c.mu.Unlock()

	gs := s.groups[g]
	var expire, gone []uint64
	gs.mu.Lock()
	for _, id := range due {
		if _, ok := gs.table.Session(id); ok {
			expire = append(expire, id)
		} else {
			gone = append(gone, id)
		}
	}
	deadline, hasDeadline := gs.table.NextDeadline()
	gs.mu.Unlock()
	if len(gone) > 0 {
		c.mu.Lock()
		for _, id := range gone {
			gc.remove(id)
		}
		c.mu.Unlock()
	}
	for _, id := range expire {
		s.proposeOwn(ctx, g, lease.Command{Op: lease.OpExpireSession, Session: id})
		s.metrics.expired.Inc()
	}
	if hasDeadline && now.UnixNano() >= deadline {
		s.proposeOwn(ctx, g, lease.Command{Op: lease.OpTick})
	}
}

// proposeOwn proposes a command the node decided on itself (expiry, tick)
// under the node's own command ids. It does not wait for the outcome: if
// it is lost, the next round of the loop proposes it again.
func (s *Server) proposeOwn(ctx context.Context, g paxos.GroupID, lc lease.Command) {
	lc.Now = s.now().UnixNano()
	if !s.ownInFlight.TryAcquire() {
		return
	}
	seq, ack := s.ownIDs.next()
	cmd := paxos.Command{ID: paxos.CommandID{Client: s.ownIDs.client, Seq: seq}, Ack: ack, Data: lockCommand(lc)}
	go func() {
		defer s.ownInFlight.Release()
		defer s.ownIDs.done(seq)
		cctx, cancel := context.WithTimeout(ctx, s.cfg.ProposeTimeout)
		defer cancel()
		if _, err := s.replica.Propose(cctx, g, cmd); err != nil {
			s.log.Debug("own command not applied", "group", g, "op", lc.Op, "err", err)
		}
	}()
}

// limiter is a counting semaphore that never blocks.
type limiter struct {
	n   atomic.Int64
	max int64
}

func (l *limiter) TryAcquire() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

func (l *limiter) Release() { l.n.Add(-1) }

// commandIDs hands out sequence numbers for one client id and computes its
// Ack: the lowest sequence number still in flight. Acknowledging a number
// that is still in flight would make the Applier drop that command as an
// old duplicate when it arrives after a later one.
type commandIDs struct {
	client   uint64
	mu       sync.Mutex
	last     uint64
	inFlight map[uint64]struct{}
}

func newCommandIDs(client uint64) *commandIDs {
	return &commandIDs{client: client, inFlight: map[uint64]struct{}{}}
}

func (c *commandIDs) next() (seq, ack uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last++
	seq, ack = c.last, c.last
	for s := range c.inFlight {
		ack = min(ack, s)
	}
	c.inFlight[seq] = struct{}{}
	return seq, ack
}

func (c *commandIDs) done(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inFlight, seq)
}
