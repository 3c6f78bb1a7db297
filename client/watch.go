package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// EventKind says what a LockEvent reports.
type EventKind uint8

// Event kinds. The first four are changes, with the protocol's numbers.
const (
	// EventGranted: Session was granted the lock with Token.
	EventGranted EventKind = 1
	// EventReleased: Session released Token (or closed its session).
	EventReleased EventKind = 2
	// EventExpired: Session expired and lost Token; the lock-delay applies.
	EventExpired EventKind = 3
	// EventCanceled: Session stopped waiting for the lock.
	EventCanceled EventKind = 4
	// EventSync: the lock's state (Holders, Waiters) at one moment. It
	// comes first, and again after any gap (a reconnect, or a reader too
	// slow to keep up), since changes during a gap are not replayed.
	EventSync EventKind = 100
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventGranted:
		return "granted"
	case EventReleased:
		return "released"
	case EventExpired:
		return "expired"
	case EventCanceled:
		return "canceled"
	case EventSync:
		return "sync"
	}
	return "unknown"
}

// LockEvent is a change of a watched lock, or its state (EventSync).
type LockEvent struct {
	Kind    EventKind
	Name    string
	Session uint64
	Token   uint64
	Shared  bool
	// Holders, HolderCount and Waiters are the lock's state: on EventSync
	// at that moment, on a change right after the command that caused it.
	// One command can cause several changes (a release that grants the
	// next waiter): each of them carries the state after the whole
	// command. On a change, Holders lists at most 64 holders, without
	// their metadata (LockStatus has it); HolderCount counts them all.
	// A server older than this client sends no state with changes, and
	// then all three are zero.
	Holders     []Holder
	HolderCount int
	Waiters     int
}

// watchBuf is the room for events between the connection's reader and a
// watch's goroutine; beyond it events are dropped and the watch syncs again.
const watchBuf = 256

// Watch streams the changes of the lock name: first an EventSync with its
// holders, then every grant, release, expiry and canceled wait, in order.
// After a gap (the connection broke, or the reader fell behind) it sends a
// new EventSync: changes in the gap are not replayed, and a change right
// after a Sync may already be part of it (tokens tell which came later).
// The channel is closed when ctx ends or the client closes. Watch fails
// at once when the lock's status cannot be read.
func (c *Client) Watch(ctx context.Context, name string) (<-chan LockEvent, error) {
	if _, err := c.LockStatus(ctx, name); err != nil {
		return nil, err
	}
	sub := &watchSub{ch: make(chan LockEvent, 64), ctx: ctx}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	w := c.watches[name]
	if w == nil {
		// One subscription per name for the whole client: a node keeps one
		// watch per name and stream, so two would overwrite each other.
		w = &nameWatch{c: c, name: name, g: c.groupOf(name), wake: make(chan struct{}, 1), subs: map[*watchSub]struct{}{}}
		c.watches[name] = w
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			w.run()
		}()
	}
	w.mu.Lock()
	w.subs[sub] = struct{}{}
	w.mu.Unlock()
	context.AfterFunc(ctx, w.poke)
	w.poke()
	return sub.ch, nil
}

// nameWatch is the client's subscription to one lock name, shared by every
// Watch of that name. Its goroutine owns the subscription and is the only
// writer of its subscribers' channels.
type nameWatch struct {
	c    *Client
	name string
	g    uint32
	wake chan struct{} // cap 1: subscribers changed

	mu   sync.Mutex // guards subs
	subs map[*watchSub]struct{}
}

type watchSub struct {
	ch     chan LockEvent
	ctx    context.Context
	synced bool // owned by the goroutine: got its EventSync since the last gap
}

func (w *nameWatch) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// live drops subscribers whose context ended, closing their channels, and
// returns the others.
func (w *nameWatch) live() []*watchSub {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*watchSub, 0, len(w.subs))
	for s := range w.subs {
		if s.ctx.Err() != nil || w.c.ctx.Err() != nil {
			delete(w.subs, s)
			close(s.ch)
			continue
		}
		out = append(out, s)
	}
	return out
}

func (w *nameWatch) run() {
	c := w.c
	var x *exchange
	defer func() {
		if x != nil {
			x.end()
		}
		w.mu.Lock()
		for s := range w.subs {
			close(s.ch)
		}
		clear(w.subs)
		w.mu.Unlock()
	}()
	failures := 0
	for {
		subs := w.live()
		if c.ctx.Err() != nil {
			return
		}
		if len(subs) == 0 {
			if x != nil {
				w.unwatch(x)
				x = nil
			}
			c.mu.Lock()
			w.mu.Lock()
			empty := len(w.subs) == 0
			if empty {
				delete(c.watches, w.name)
			}
			w.mu.Unlock()
			c.mu.Unlock()
			if empty {
				return
			}
			continue
		}
		if x == nil {
			var err error
			if x, err = w.subscribe(); err != nil {
				failures++
				c.log.Debug("lockd: watch: subscribe failed", "lock", w.name, "err", err)
				w.pause(failures)
				continue
			}
			failures = 0
			for _, s := range subs {
				s.synced = false
			}
		}
		if !w.sync(subs) {
			continue
		}
		select {
		case rep := <-x.cl.ch:
			if rep.err == nil && rep.msg.Type == wire.TypeEvent {
				w.deliver(subs, &rep.msg)
			}
		case <-x.cn.done:
		case <-w.wake:
		case <-c.ctx.Done():
			return
		}
		if isDone(x.cn.done) || x.cn.overflowed(x.cl) {
			x.end()
			x = nil // subscribe again, then sync
		}
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// pause waits before trying again, or until the subscribers change.
func (w *nameWatch) pause(failures int) {
	t := time.NewTimer(backoff(failures))
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.wake:
	case <-w.c.ctx.Done():
	}
}

func (w *nameWatch) subscribe() (*exchange, error) {
	c := w.c
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
	defer cancel()
	x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeWatch, Group: w.g, Name: w.name}, callOpts{group: int(w.g), keep: true, buf: watchBuf})
	if err != nil {
		return nil, err
	}
	if x.resp.Code != wire.CodeOK {
		return nil, errorFor(&x.resp, nil)
	}
	// Events that came before the response are older than the sync that
	// follows; drop them.
	x.early = nil
	return x, nil
}

// unwatch ends the subscription on its node and waits for the answer, so
// that a later Watch of the same name cannot overtake it there.
func (w *nameWatch) unwatch(x *exchange) {
	c := w.c
	x.end()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
	defer cancel()
	c.invoke(ctx, &wire.Msg{Type: wire.TypeUnwatch, Group: w.g, Name: w.name}, callOpts{addr: x.cn.addr})
}

// sync sends an EventSync to every subscriber that needs one. It reports
// false when the lock's state could not be read (the loop tries again).
func (w *nameWatch) sync(subs []*watchSub) bool {
	var need []*watchSub
	for _, s := range subs {
		if !s.synced {
			need = append(need, s)
		}
	}
	if len(need) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(w.c.ctx, w.c.cfg.RequestTimeout)
	info, err := w.c.LockStatus(ctx, w.name)
	cancel()
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			w.pause(1)
		}
		return false
	}
	ev := LockEvent{Kind: EventSync, Name: w.name, Holders: info.Holders, HolderCount: len(info.Holders), Waiters: info.Waiters}
	for _, s := range need {
		w.send(s, ev)
		s.synced = true
	}
	return true
}

// deliver hands one change to every synced subscriber, in order. A slow
// subscriber holds up this name only; the connection's reader never waits.
func (w *nameWatch) deliver(subs []*watchSub, m *wire.Msg) {
	ev := LockEvent{Kind: EventKind(m.Kind), Name: m.Name, Session: m.Session, Token: m.Token, Shared: m.Flags&wire.FlagShared != 0}
	if m.Flags&wire.FlagState != 0 {
		ev.Holders = holdersOf(m.Holders)
		ev.HolderCount = int(m.HolderCount)
		ev.Waiters = int(m.Waiters)
	}
	for _, s := range subs {
		if s.synced {
			w.send(s, ev)
		}
	}
}

func (w *nameWatch) send(s *watchSub, ev LockEvent) {
	select {
	case s.ch <- ev:
	case <-s.ctx.Done():
	case <-w.c.ctx.Done():
	}
}
