package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/lockd/lockd/internal/wire"
)

// acquisition is one Acquire or TryAcquire: one command, sent as often as
// it takes (to follow redirects, failovers and broken connections) under
// one (Client, Seq), so that the cluster applies it once.
//
// Its seq stays open (unacknowledged) until the acquisition is over, so
// that the cluster keeps its outcome: a re-send after a failover is then
// answered as a duplicate ("queued") rather than as a forgotten command.
type acquisition struct {
	s   *Session
	g   uint32
	sid uint64
	seq uint64
	req wire.Msg
}

// eventRoom is the room a waiting Acquire's call has for events: a grant or
// a loss, each at most once.
const eventRoom = 4

// waitOutElection is how a waiting Acquire treats a request that failed
// with err: "the cluster is unavailable" or "no master right now" is
// waited out (it returns nil after a pause, and the caller tries again) for
// as long as ctx allows, through a long election too: the session's
// keep-alives, not the caller, decide when the session is gone. Any other
// error, or the end of ctx or of the session, is returned.
func (s *Session) waitOutElection(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil || s.Err() != nil || !(errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoMaster)) {
		return err
	}
	s.c.log.Debug("lockd: acquire: cluster unavailable, still waiting", "lock", name, "err", err)
	if serr := sleepFor(ctx, s, backoffMax); serr != nil {
		return serr
	}
	return nil
}

// run sends the acquire and waits for its grant; it returns the token.
func (a *acquisition) run(ctx context.Context) (uint64, error) {
	c := a.s.c
	wait := a.req.Flags&wire.FlagWait != 0
	queued := false // the command is known to have been applied (queued)
	resent := false
	for {
		x, err := c.invoke(ctx, &a.req, callOpts{group: int(a.g), keep: wait, buf: eventRoom, s: a.s})
		if wait && err != nil {
			if err = a.s.waitOutElection(ctx, a.req.Name, err); err == nil {
				resent = true
				continue
			}
		}
		if err != nil {
			if serr := a.s.endErr(); serr != nil && ctx.Err() == nil {
				err = serr // the session ended: that, not the network, is why
			}
			return 0, a.abandon(queued, err)
		}
		switch x.resp.Code {
		case wire.CodeOK:
			x.end()
			c.seqs.done(a.seq)
			return x.resp.Token, nil
		case wire.CodeQueued:
			queued = true
		case wire.CodeSessionUnknown:
			c.seqs.done(a.seq)
			a.s.poke()
			return 0, errorFor(&x.resp, ErrLockLost)
		default:
			c.seqs.done(a.seq)
			return 0, errorFor(&x.resp, ErrLockLost)
		}
		if !wait {
			// A node must not queue a request that did not ask to wait.
			x.end()
			return 0, a.abandon(true, fmt.Errorf("node %d queued a request that did not ask to wait", x.resp.Node))
		}
		token, again, err := a.await(ctx, x, resent && x.resp.Flags&wire.FlagDuplicate != 0)
		x.end()
		switch {
		case err != nil:
			return 0, a.abandon(queued, err)
		case !again:
			c.seqs.done(a.seq)
			return token, nil
		}
		resent = true
		if err := sleepFor(ctx, a.s, backoff(1)); err != nil {
			return 0, a.abandon(queued, err)
		}
	}
}

// await waits for the grant of a queued acquire. It returns again=true when
// the acquire must be sent again: its connection broke, the group's master
// changed, or events were dropped. check says that this answer is a
// re-send's duplicate: the first send was queued, and its grant may have
// been pushed meanwhile to a connection nobody listens to any more, so
// the lock's holders are checked first.
func (a *acquisition) await(ctx context.Context, x *exchange, check bool) (token uint64, again bool, err error) {
	c := a.s.c
	changes := c.route.changes(int(a.g))
	for _, ev := range x.early {
		if tok, done, err := a.event(&ev); done || err != nil {
			return tok, false, err
		}
	}
	if check {
		info, err := c.lockStatus(ctx, a.req.Name, a.s)
		if err != nil {
			if ctx.Err() != nil {
				return 0, false, ctx.Err()
			}
			if serr := a.s.endErr(); serr != nil {
				return 0, false, serr
			}
			return 0, true, nil
		}
		for _, h := range info.Holders {
			if h.Session == a.sid {
				return h.Token, false, nil
			}
		}
	}
	for {
		select {
		case rep := <-x.cl.ch:
			if rep.err != nil {
				return 0, true, nil
			}
			if rep.msg.Type != wire.TypeEvent {
				continue
			}
			if tok, done, err := a.event(&rep.msg); done || err != nil {
				return tok, false, err
			}
		case <-x.cn.done:
			return 0, true, nil
		case <-changes:
			return 0, true, nil
		case <-a.s.done:
			return 0, false, a.s.Err()
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
		if x.cn.overflowed(x.cl) {
			return 0, true, nil
		}
	}
}

// event handles one event of a waiting acquire.
func (a *acquisition) event(m *wire.Msg) (token uint64, done bool, err error) {
	switch m.Kind {
	case wire.EventGranted:
		return m.Token, true, nil
	case wire.EventLost:
		// The wait ended on the cluster: the session closed or expired
		// (this session cancels a wait only after giving up on it). The
		// keep-alive loop confirms and ends the session.
		a.s.poke()
		return 0, false, fmt.Errorf("the wait ended on the cluster: %s: %w", m.Err, ErrSessionExpired)
	}
	return 0, false, nil
}

// abandon undoes what may remain of an acquire that gives up with cause: a
// queued request is taken out of the queue, and a grant that raced with the
// cancel is released. When the acquire's outcome is unknown (queued is
// false), it is first sent again, as the same command: the answer tells its
// outcome, and the command can no longer take effect after the cancel. It
// works within RequestTimeout, past the caller's context, and returns
// cause.
func (a *acquisition) abandon(queued bool, cause error) error {
	s, c := a.s, a.s.c
	defer c.seqs.done(a.seq)
	if s.Err() != nil || errors.Is(cause, ErrClosed) {
		return cause // the session is over: the cluster drops its waits
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
	defer cancel()
	if !queued {
		x, err := c.invoke(ctx, &a.req, callOpts{group: int(a.g), s: s})
		if err != nil {
			c.log.Warn("lockd: an abandoned acquire may still be queued or granted until its session ends",
				"lock", a.req.Name, "session", a.sid, "err", err)
			return cause
		}
		switch x.resp.Code {
		case wire.CodeOK:
			s.releaseQuietly(ctx, a, x.resp.Token)
			return cause
		case wire.CodeQueued:
		default:
			return cause // refused: nothing to undo
		}
	}
	seq := c.seqs.begin()
	defer c.seqs.done(seq)
	req := &wire.Msg{Type: wire.TypeCancelWait, Group: a.g, Session: a.sid, Name: a.req.Name, Client: c.id, Seq: seq}
	x, err := c.invoke(ctx, req, callOpts{group: int(a.g), s: s})
	switch {
	case err != nil:
		c.log.Warn("lockd: could not cancel an abandoned wait; it stays queued until its session ends",
			"lock", a.req.Name, "session", a.sid, "err", err)
	case x.resp.Code == wire.CodeNotFound && x.resp.Token != 0:
		// Granted before the cancel arrived.
		s.releaseQuietly(ctx, a, x.resp.Token)
	}
	return cause
}

func (s *Session) releaseQuietly(ctx context.Context, a *acquisition, token uint64) {
	if err := s.release(ctx, a.g, a.sid, a.req.Name, token, true); err != nil {
		s.c.log.Warn("lockd: could not release a grant that came after its Acquire gave up; it stays held until its session ends",
			"lock", a.req.Name, "token", token, "err", err)
	}
}
