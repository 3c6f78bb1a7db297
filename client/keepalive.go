package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// deadline returns when the session can no longer be trusted, and false
// while no group has been confirmed yet.
//
// Why this is safe. The master of a group expires a session when it has not
// received a keep-alive for TTL, counted on its own monotonic clock from
// when it *received* the last one; only then can it give the session's
// locks to anyone else. The client counts from when it *sent* the last
// keep-alive that was answered OK, which is earlier than its receipt, and
// gives up LostMargin before TTL is over. So, as long as the two clocks run
// at nearly the same rate (the margin's 10% absorbs rate differences, and
// its 100ms scheduling delays), the client has closed Lost before the master
// can expire the session. A new master does not expire anything for a full
// TTL after it starts serving, so a failover only adds to the client's
// lead. The client never counts from when an answer arrived: a delayed
// answer would move the deadline past the master's.
func (s *Session) deadline() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d time.Time
	found := false
	for _, gs := range s.groups {
		if gs.id == 0 || gs.lastOK.IsZero() {
			continue
		}
		t := gs.lastOK.Add(s.ttl - s.margin)
		if !found || t.Before(d) {
			d, found = t, true
		}
	}
	return d, found
}

// kaRound is one round of keep-alives: one KeepAlive per node, carrying the
// items of every group that node masters. A group whose master is unknown
// is asked of every node: only its master answers OK, and that answer
// teaches the router where it is.
type kaRound struct {
	sent    time.Time // before the first send: the time an OK counts from
	expires time.Time
	ch      chan reply // one reply per call, so sends never block
	calls   map[uint64]*kaCall
	// unsent holds the batches for nodes still being dialed; they are
	// sent when the dial ends, within the round.
	unsent map[string]*kaBatch
	groups map[uint32]uint64 // group -> session ID, as the round started
	via    map[uint32]string // group -> the master it was sent to (none: to every node)
	ok     map[uint32]bool
}

type kaCall struct {
	cn   *conn
	addr string
}

type kaBatch struct {
	cn    *conn
	items []wire.KeepAliveItem
}

// run is the session's keep-alive goroutine: a round every TTL/3, sooner
// after a failure or when Renew asks, and the end of the session when its
// deadline passes or a master says the session is unknown.
func (s *Session) run() {
	defer close(s.loopDone)
	clk := s.c.clk
	interval := s.ttl / 3
	retry := max(s.ttl/20, 50*time.Millisecond)
	next := clk.Now().Add(interval)
	var rnd *kaRound
	var waiting, riding []chan error // Renew calls: before and during a round
	defer func() {
		if rnd != nil {
			s.endRound(rnd)
		}
		err := s.Err()
		if err == nil {
			err = ErrClosed
		}
		for _, r := range append(waiting, riding...) {
			r <- err
		}
	}()
	for {
		now := clk.Now()
		if d, ok := s.deadline(); ok && !now.Before(d) {
			s.fail(s.expiredErr())
			s.closeRemote()
			return
		}
		if rnd == nil && (len(waiting) > 0 || !now.Before(next)) {
			rnd = s.startRound(now, min(interval, max(s.ttl/20, 250*time.Millisecond), s.c.cfg.RequestTimeout))
			if rnd == nil { // nothing to keep alive yet
				for _, r := range waiting {
					r <- nil
				}
				waiting, next = nil, now.Add(interval)
			} else {
				riding, waiting = append(riding, waiting...), nil
			}
		}
		wakeAt := next
		if rnd != nil {
			wakeAt = rnd.expires
		}
		if d, ok := s.deadline(); ok && d.Before(wakeAt) {
			wakeAt = d
		}
		var results <-chan reply
		if rnd != nil {
			results = rnd.ch
		}
		t := clk.NewTimer(wakeAt.Sub(now))
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.done:
			t.Stop()
			if errors.Is(s.Err(), ErrLockLost) {
				// Ended by a call that found the deadline passed
				// (checkDeadline), or by a master that no longer knows
				// the session: close what is left on the cluster.
				s.closeRemote()
			}
			return
		case <-s.wake:
		case r := <-s.renews:
			waiting = append(waiting, r)
		case <-t.C():
		case rep := <-results:
			s.absorb(rnd, rep)
		}
		t.Stop()
		if rnd != nil {
			s.sendReady(rnd)
		}
		if rnd != nil && ((len(rnd.calls) == 0 && len(rnd.unsent) == 0) || !clk.Now().Before(rnd.expires)) {
			err, sent := s.endRound(rnd), rnd.sent
			rnd = nil
			if serr := s.Err(); serr != nil {
				if errors.Is(serr, ErrLockLost) {
					s.closeRemote() // a master said the session is unknown: close the rest
				}
				return
			}
			for _, r := range riding {
				r <- err
			}
			riding = nil
			if err == nil {
				next = sent.Add(interval)
			} else {
				next = clk.Now().Add(retry)
				s.c.log.Debug("lockd: keep-alive failed, retrying", "err", err, "in", retry)
			}
		}
	}
}

// startRound sends one round of keep-alives, or returns nil when the
// session has no group to keep alive. Batches for nodes not connected yet
// are sent when their dial ends, within the round (see sendReady).
func (s *Session) startRound(now time.Time, timeout time.Duration) *kaRound {
	s.mu.Lock()
	groups := map[uint32]uint64{}
	for g, gs := range s.groups {
		if gs.id != 0 {
			groups[g] = gs.id
		}
	}
	s.mu.Unlock()
	if len(groups) == 0 {
		return nil
	}
	c := s.c
	batches := map[string][]wire.KeepAliveItem{}
	via := map[uint32]string{}
	for g, id := range groups {
		it := wire.KeepAliveItem{Group: g, Session: id}
		if addr := c.route.master(int(g)); addr != "" {
			batches[addr] = append(batches[addr], it)
			via[g] = addr
			continue
		}
		// The master is unknown or down: ask every node.
		for _, addr := range c.route.all() {
			batches[addr] = append(batches[addr], it)
		}
	}
	rnd := &kaRound{sent: now, expires: now.Add(timeout), ch: make(chan reply, len(batches)),
		calls: map[uint64]*kaCall{}, unsent: map[string]*kaBatch{}, groups: groups, via: via, ok: map[uint32]bool{}}
	for addr, items := range batches {
		slices.SortFunc(items, func(a, b wire.KeepAliveItem) int { return int(a.Group) - int(b.Group) })
		cn, err := c.connect(addr)
		if err != nil {
			continue
		}
		rnd.unsent[addr] = &kaBatch{cn: cn, items: items}
		cn.notify(s.poke)
	}
	s.sendReady(rnd)
	return rnd
}

// sendReady sends the round's batches whose connection is ready, and drops
// those whose dial failed.
func (s *Session) sendReady(rnd *kaRound) {
	c := s.c
	for addr, b := range rnd.unsent {
		select {
		case <-b.cn.ready:
		default:
			continue // still dialing; the dial's end pokes the loop
		}
		delete(rnd.unsent, addr)
		if b.cn.dialErr != nil {
			continue
		}
		reqID := c.reqID.Add(1)
		if _, err := b.cn.register(reqID, rnd.ch, 0, false); err != nil {
			continue
		}
		if err := b.cn.send(&wire.Msg{Type: wire.TypeKeepAlive, ReqID: reqID, KeepAlives: b.items}); err != nil {
			b.cn.unregister(reqID)
			continue
		}
		rnd.calls[reqID] = &kaCall{cn: b.cn, addr: addr}
	}
}

// absorb takes in one answer of the round.
func (s *Session) absorb(rnd *kaRound, rep reply) {
	kc := rnd.calls[rep.reqID]
	if kc == nil {
		return
	}
	delete(rnd.calls, rep.reqID)
	if rep.err != nil {
		return
	}
	s.c.route.markUp(kc.addr)
	for _, it := range rep.msg.KeepAlives {
		id, ok := rnd.groups[it.Group]
		if !ok || id != it.Session {
			continue
		}
		switch it.Code {
		case wire.CodeOK:
			rnd.ok[it.Group] = true
			if s.c.route.master(int(it.Group)) != kc.addr {
				s.c.route.learnHint(it.Group, rep.msg.Node, kc.addr)
			}
		case wire.CodeSessionUnknown:
			s.fail(fmt.Errorf("%w: the master of group %d no longer knows session %d (it expired or was closed) (%w)",
				ErrSessionExpired, it.Group, id, ErrLockLost))
		case wire.CodeNotMaster:
			s.c.route.forget(int(it.Group), kc.addr)
		}
	}
}

// endRound records the round's OKs and returns nil when every group's
// master answered OK.
func (s *Session) endRound(rnd *kaRound) error {
	for reqID, kc := range rnd.calls {
		kc.cn.unregister(reqID)
		// No answer within the round: the node may be dead with its
		// connection still open (a SIGKILLed or cut-off node is noticed by
		// QUIC only after its idle timeout). Requests avoid it from now
		// on, until it answers again.
		s.c.route.markDown(kc.addr)
	}
	var missing []uint32
	s.mu.Lock()
	for g, id := range rnd.groups {
		gs := s.groups[g]
		if !rnd.ok[g] {
			missing = append(missing, g)
			// A master that does not answer may be cut off while the others
			// elect a new one: the next round asks every node.
			s.c.route.forget(int(g), rnd.via[g])
			continue
		}
		if gs != nil && gs.id == id && rnd.sent.After(gs.lastOK) {
			gs.lastOK = rnd.sent
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	// No node answered OK for these groups: their master may be a node
	// this client does not know yet (keep-alive answers name none).
	s.c.route.askRefresh()
	slices.Sort(missing)
	return fmt.Errorf("lockd: keep-alive not confirmed for group(s) %v: %w", missing, ErrUnavailable)
}

// closeRemote closes, as best it can, what is left of a lost session on the
// cluster, so that its locks are freed now rather than after the TTL.
func (s *Session) closeRemote() {
	ctx, cancel := context.WithTimeout(s.c.ctx, s.c.cfg.RequestTimeout)
	defer cancel()
	s.mu.Lock()
	ids := map[uint32]uint64{}
	for g, gs := range s.groups {
		if gs.id != 0 {
			ids[g] = gs.id
		}
	}
	s.mu.Unlock()
	for g, id := range ids {
		s.closeGroup(ctx, g, id)
	}
}

// renew asks the loop for a fresh round of keep-alives and returns its
// outcome: nil when every group's master answered OK.
func (s *Session) renew(ctx context.Context) error {
	r := make(chan error, 1)
	select {
	case s.renews <- r:
	case <-s.done:
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r:
		return err
	case <-s.done:
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}
