package client

import (
	"context"
	"fmt"

	"github.com/lockd/lockd/internal/wire"
)

// MasterEvent is a change of a group's master.
//
// # Detecting a gap
//
// Seq numbers the master changes of the group's log: a lease of a new
// master, or a release, adds exactly one. It is derived from the log, so it
// is the same whichever node the stream comes from. Per group, each event's
// Seq is either the previous event's Seq plus one (the next change), or equal
// to it: then the event says that the master's lease ran out by the serving
// node's clock (Node 0, Cause "expired") or, rarely, was renewed after all
// (Cause "renewed"). The step from one master to another always passes
// through an event with Node 0. WatchMasters never skips a change silently:
// when it cannot deliver every change (the node it reconnected to no longer
// keeps them), it delivers the group's current state with Resync set, and
// Seq may jump there. So, for a consumer, Seq growing by more than one
// without Resync is a bug, and Resync says "changes were missed; this is
// the state now".
type MasterEvent struct {
	Group uint32 `json:"group"`
	// Epoch orders the events of one group; it only grows.
	Epoch uint64 `json:"epoch"`
	// Seq counts the master changes of the group's log (see above).
	Seq uint64 `json:"seq"`
	// Node is the new master's ID, 0 for "no master" (its lease ran out
	// or was released, and no one took over yet).
	Node uint32 `json:"node"`
	Addr string `json:"addr,omitempty"`
	// Cause says why: "lease" (a lease of a new master), "released" (the
	// master handed the group over), "expired" (its lease ran out),
	// "renewed" (renewed after it had been counted out), or "none" (the
	// group has had no master yet).
	Cause string `json:"cause"`
	// Resync is set when the watch had to skip changes it could no longer
	// learn, and this event is the group's current state instead.
	Resync bool `json:"resync,omitempty"`
}

// causeName names an election.Cause as it travels in wire.MasterItem.
func causeName(c uint8) string {
	switch c {
	case 1:
		return "lease"
	case 2:
		return "released"
	case 3:
		return "expired"
	case 4:
		return "renewed"
	}
	return "none"
}

// masterBuf is the room for master events between the connection's reader
// and the watch's goroutine; beyond it the watch resumes from its epochs.
const masterBuf = 1024

// WatchMasters streams master changes: first every group's current master,
// then every change, in epoch order per group, "no master" included. After
// a reconnect (to any node) it resumes after the last event it delivered of
// each group and delivers every change since, in order, exactly once. If
// the node no longer keeps that far back, it delivers the group's current
// state with Resync set. See MasterEvent for the rule that tells a gap. The
// channel is closed when ctx ends or the client closes.
func (c *Client) WatchMasters(ctx context.Context) (<-chan MasterEvent, error) {
	mw := &masterWatch{c: c, ctx: ctx, last: make([]wire.MasterItem, c.groups), seen: make([]bool, c.groups), out: make(chan MasterEvent, 64)}
	x, err := mw.subscribe(ctx)
	if err != nil {
		return nil, fmt.Errorf("lockd: watch masters: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		x.end()
		return nil, ErrClosed
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		mw.run(x)
	}()
	return mw.out, nil
}

// masterWatch is one WatchMasters; its goroutine owns every field.
type masterWatch struct {
	c    *Client
	ctx  context.Context
	last []wire.MasterItem // by group: the last event delivered
	seen []bool
	out  chan MasterEvent
	// pending holds the events of a subscribe's answer, to deliver.
	pending []wire.MasterItem
}

// subscribe subscribes from the last epochs delivered, and keeps the
// current masters the answer carries for delivery.
func (mw *masterWatch) subscribe(ctx context.Context) (*exchange, error) {
	c := mw.c
	for {
		req := &wire.Msg{Type: wire.TypeWatchMasters}
		for g, ok := range mw.seen {
			if ok {
				l := mw.last[g]
				req.Masters = append(req.Masters, wire.MasterItem{Group: uint32(g), Epoch: l.Epoch, Seq: l.Seq, Master: l.Master})
			}
		}
		x, err := c.invoke(ctx, req, callOpts{group: -1, keep: true, buf: masterBuf})
		if err != nil {
			return nil, err
		}
		switch x.resp.Code {
		case wire.CodeOK:
			// The answer's masters are the node's state now, good for
			// routing only: delivering them would jump over the events the
			// stream is about to replay. The stream itself starts with
			// what this watch missed, or with the current state of groups
			// it has not seen yet. Its member list is the node's too.
			c.route.learnStatus(&wire.Msg{Members: x.resp.Members})
			for _, it := range x.resp.Masters {
				c.route.learnMaster(it)
			}
			for _, ev := range x.early {
				mw.pending = append(mw.pending, ev.Masters...)
			}
			return x, nil
		case wire.CodeResync:
			// The node no longer keeps events that far back: say so, with
			// its current state, and subscribe again from there.
			for _, it := range x.resp.Masters {
				if !mw.deliver(it, true) {
					return nil, ctx.Err()
				}
			}
			continue
		}
		return nil, errorFor(&x.resp, nil)
	}
}

func (mw *masterWatch) run(x *exchange) {
	c := mw.c
	defer close(mw.out)
	defer func() {
		if x != nil {
			x.end()
		}
	}()
	failures := 0
	for {
		for len(mw.pending) > 0 {
			it := mw.pending[0]
			mw.pending = mw.pending[1:]
			if !mw.emit(it) {
				return
			}
		}
		if x == nil {
			var err error
			if x, err = mw.subscribe(mw.ctx); err != nil {
				if mw.ctx.Err() != nil || c.ctx.Err() != nil {
					return
				}
				failures++
				c.log.Debug("lockd: watch masters: subscribe failed", "err", err)
				if sleep(mw.ctx, backoff(failures)) != nil {
					return
				}
				continue
			}
			failures = 0
			continue
		}
		select {
		case rep := <-x.cl.ch:
			if rep.err == nil && rep.msg.Type == wire.TypeEvent {
				if rep.msg.Code == wire.CodeResync {
					x.end()
					x = nil // the node dropped us: resume from our epochs
					continue
				}
				mw.pending = append(mw.pending, rep.msg.Masters...)
			}
		case <-x.cn.done:
		case <-mw.ctx.Done():
			return
		case <-c.ctx.Done():
			return
		}
		if isDone(x.cn.done) || x.cn.overflowed(x.cl) {
			x.end()
			x = nil
		}
	}
}

// emit delivers it if it is newer than what was delivered for its group,
// and reports false when the watch is over. A change that skips Seq numbers
// is delivered with Resync set: changes were missed.
func (mw *masterWatch) emit(it wire.MasterItem) bool {
	g := int(it.Group)
	if g >= len(mw.last) || (mw.seen[g] && it.Epoch <= mw.last[g].Epoch) {
		return true // a repeat, or older than what was delivered
	}
	gap := mw.seen[g] && it.Seq > mw.last[g].Seq+1
	return mw.deliver(it, gap)
}

// deliver hands it to the consumer, unless it is not newer than what was
// delivered (a resync's state may be).
func (mw *masterWatch) deliver(it wire.MasterItem, resync bool) bool {
	g := int(it.Group)
	if g >= len(mw.last) || (mw.seen[g] && it.Epoch <= mw.last[g].Epoch) {
		return true
	}
	mw.seen[g], mw.last[g] = true, it
	mw.c.route.learnMaster(it)
	select {
	case mw.out <- MasterEvent{Group: it.Group, Epoch: it.Epoch, Seq: it.Seq, Node: it.Master, Addr: it.Addr, Cause: causeName(it.Cause), Resync: resync}:
		return true
	case <-mw.ctx.Done():
		return false
	case <-mw.c.ctx.Done():
		return false
	}
}
