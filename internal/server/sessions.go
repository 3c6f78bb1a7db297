package server

import (
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
type sessionClock struct {
	mu       sync.Mutex
	lastSeen map[paxos.GroupID]map[uint64]time.Time
	serving  map[paxos.GroupID]bool
}

func newSessionClock() *sessionClock {
	return &sessionClock{lastSeen: map[paxos.GroupID]map[uint64]time.Time{}, serving: map[paxos.GroupID]bool{}}
}

func (c *sessionClock) seen(g paxos.GroupID, session uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.lastSeen[g]
	if m == nil {
		m = map[uint64]time.Time{}
		c.lastSeen[g] = m
	}
	m[session] = now
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
		case now := <-t.C:
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
	gs := s.groups[g]
	gs.mu.Lock()
	sessions := gs.table.Sessions()
	deadline, hasDeadline := gs.table.NextDeadline()
	gs.mu.Unlock()
	last := c.lastSeen[g]
	graceFrom := now // for sessions this node has not heard from
	if last == nil || !was {
		// Grace: keep-alives went to the previous master until it stopped
		// serving, so count every session's TTL from then. Nothing was
		// answered for g after that (this node waited it out before
		// serving), so no session's TTL can have been extended later.
		if end := s.elector.PredecessorEnd(g); !end.IsZero() && end.Before(now) {
			graceFrom = end
		}
		// Keep-alives this node answered after that (it serves from
		// before this tick) stay: a TTL must never count from before a
		// keep-alive that was answered.
		fresh := make(map[uint64]time.Time, len(sessions))
		for id, t := range last {
			if t.After(graceFrom) {
				fresh[id] = t
			}
		}
		last = fresh
		c.lastSeen[g] = last
	}
	live := make(map[uint64]bool, len(sessions))
	var expire []uint64 // sessions to expire
	for _, si := range sessions {
		live[si.ID] = true
		seen, ok := last[si.ID]
		if !ok {
			last[si.ID] = graceFrom
			if now.Sub(graceFrom) > si.TTL {
				expire = append(expire, si.ID)
			}
			continue
		}
		if now.Sub(seen) > si.TTL {
			expire = append(expire, si.ID)
		}
	}
	for id := range last {
		if !live[id] {
			delete(last, id)
		}
	}
	c.mu.Unlock()
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
	lc.Now = time.Now().UnixNano()
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
