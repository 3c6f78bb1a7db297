package client

import (
	"context"
	"fmt"

	"github.com/lockd/lockd/internal/wire"
)

// MasterEvent is a change of a group's master.
type MasterEvent struct {
	Group uint32 `json:"group"`
	// Epoch orders the changes of one group; it only grows.
	Epoch uint64 `json:"epoch"`
	// Node is the new master's ID, 0 for "no master" (its lease ran out
	// and no one took over yet).
	Node uint32 `json:"node"`
	Addr string `json:"addr,omitempty"`
}

// masterBuf is the room for master events between the connection's reader
// and the watch's goroutine; beyond it the watch resumes from its epochs.
const masterBuf = 1024

// WatchMasters streams master changes: first every group's current master,
// then every change, in epoch order per group, "no master" included. After
// a reconnect it resumes from the last epoch it delivered of each group, so
// nothing is lost or repeated (if a node no longer keeps that far back, it
// goes on from the current state). The channel is closed when ctx ends or
// the client closes.
func (c *Client) WatchMasters(ctx context.Context) (<-chan MasterEvent, error) {
	mw := &masterWatch{c: c, ctx: ctx, last: make([]uint64, c.groups), seen: make([]bool, c.groups), out: make(chan MasterEvent, 64)}
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
	last []uint64 // by group: the epoch of the last event delivered
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
				req.Masters = append(req.Masters, wire.MasterItem{Group: uint32(g), Epoch: mw.last[g]})
			}
		}
		x, err := c.invoke(ctx, req, callOpts{group: -1, keep: true, buf: masterBuf})
		if err != nil {
			return nil, err
		}
		switch x.resp.Code {
		case wire.CodeOK:
			mw.pending = append(mw.pending, x.resp.Masters...)
			for _, ev := range x.early {
				mw.pending = append(mw.pending, ev.Masters...)
			}
			return x, nil
		case wire.CodeResync:
			// The node no longer keeps events that far back: take its
			// current state, and subscribe again from there.
			for _, it := range x.resp.Masters {
				if !mw.emit(it) {
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
// and reports false when the watch is over.
func (mw *masterWatch) emit(it wire.MasterItem) bool {
	g := int(it.Group)
	if g >= len(mw.last) || (mw.seen[g] && it.Epoch <= mw.last[g]) {
		return true // a repeat, or older than what was delivered
	}
	mw.seen[g], mw.last[g] = true, it.Epoch
	mw.c.route.learnMaster(it)
	select {
	case mw.out <- MasterEvent{Group: it.Group, Epoch: it.Epoch, Node: it.Master, Addr: it.Addr}:
		return true
	case <-mw.ctx.Done():
		return false
	case <-mw.c.ctx.Done():
		return false
	}
}
