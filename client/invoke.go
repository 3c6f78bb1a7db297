package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// attemptDialWait bounds how long one attempt waits for a connection.
const attemptDialWait = time.Second

// callOpts says where a request goes and what it expects back.
type callOpts struct {
	// group routes the request to that group's master; -1 sends it to any
	// node.
	group int
	// addr, when set, sends the request to that node only, once, without
	// following redirects (Hello to one endpoint).
	addr string
	// keep leaves the call registered after a CodeOK or CodeQueued
	// response, for the events that follow; buf is the room for them.
	keep bool
	buf  int
	// s, when set, is the session the request serves: the call ends, with
	// the session's error, as soon as the session does, whatever it waits
	// for at that moment (an answer, a dial, a pause between retries). Set
	// it on every blocking call of a session, and leave it nil on what must
	// go on after the session's end (closing it, releasing a late grant).
	s *Session
}

// exchange is one answered request: the response, any events that arrived
// before it, and, for a kept call, the call that goes on receiving events.
type exchange struct {
	resp  wire.Msg
	early []wire.Msg
	cn    *conn
	cl    *call // nil unless the call is kept
	reqID uint64
	sent  time.Time // on the client's clock, when the answered attempt was sent
}

// end unregisters a kept call.
func (x *exchange) end() {
	if x.cl != nil {
		x.cn.unregister(x.reqID)
		x.cl = nil
	}
}

// invoke sends req and returns the first answer that is not worth retrying.
// It routes by o, follows redirects to the master, and retries transport
// failures and retryable codes with jittered backoff, at most maxAttempts
// times and never past ctx. When ctx has a deadline, the answers of a live
// node that say "retry shortly" (no master right now, a redirect, overloaded,
// outcome unknown) do not count against maxAttempts: the caller said how long
// it is willing to wait, and an election on a busy machine can outlast 12
// attempts (about 6–16 s). Transport failures always count, so an
// unreachable cluster is reported after maxAttempts. Each attempt gets a fresh ReqID and the current
// Ack, but keeps req's Client and Seq: a command retried after a redirect, a
// timeout, an "outcome unknown", a lost connection or a failover is the same
// command, and the cluster applies it at most once (a duplicate is answered
// with the first outcome and FlagDuplicate).
//
// The error is ctx's error when ctx ended, the session's error when o.s
// ended, ErrClosed, or, once the attempts are used up, an error matching
// ErrUnavailable or ErrNoMaster. Callers name the request in it.
func (c *Client) invoke(ctx context.Context, req *wire.Msg, o callOpts) (*exchange, error) {
	var lastErr error
	var lastResp *wire.Msg
	avoid := ""
	pause := false
	redirects := 0
	attempts := maxAttempts
	if o.addr != "" {
		attempts = 1
	}
	_, patient := ctx.Deadline()
	patient = patient && o.addr == ""
	// ctxEnded names the last answer in ctx's error, so that a deadline
	// that passes during an election says so.
	ctxEnded := func(err error) error {
		if ctx.Err() == nil || lastResp == nil {
			return err
		}
		return fmt.Errorf("%w (the last answer: %v)", err, errorFor(lastResp, nil))
	}
	tried := 0
	for n := 1; n <= attempts; n++ {
		tried = n
		if pause {
			if err := sleepFor(ctx, o.s, backoff(n-1)); err != nil {
				return nil, ctxEnded(err)
			}
		}
		pause = true
		if err := ctx.Err(); err != nil {
			return nil, ctxEnded(err)
		}
		if err := o.s.endErr(); err != nil {
			return nil, err
		}
		addr := o.addr
		if addr == "" {
			if a, down := c.route.masterState(o.group); down {
				c.probe(a) // in the background: is the master back?
			}
			addr = c.route.pick(o.group, avoid)
		}
		if addr == "" {
			return nil, fmt.Errorf("%w: no node address is known", ErrUnavailable)
		}
		x, err := c.attempt(ctx, addr, req, o)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if serr := o.s.endErr(); serr != nil {
				return nil, serr
			}
			if errors.Is(err, ErrClosed) {
				return nil, err
			}
			lastErr, lastResp = err, nil
			// The node failed or did not answer in time: avoid it, for
			// every group, until it answers again.
			c.route.markDown(addr)
			avoid = addr
			c.log.Debug("lockd: request failed, retrying", "req", req.Type, "node", addr, "attempt", n, "err", err)
			continue
		}
		c.route.markUp(addr)
		m := &x.resp
		switch m.Code {
		case wire.CodeNotMaster:
			x.end()
			lastErr, lastResp = nil, m
			if patient {
				attempts++ // a live node's answer: free while ctx allows
			}
			if m.Hint != 0 {
				c.route.learnHint(req.Group, m.Hint, m.HintAddr)
				redirects++
				// Follow a hint at once, unless hints go round in circles
				// (masters changing under us): then back off.
				pause = redirects > 2
			} else {
				c.route.forget(o.group, addr)
			}
			continue
		case wire.CodeOverloaded, wire.CodeOutcomeUnknown:
			x.end()
			lastErr, lastResp = nil, m
			if patient {
				attempts++
			}
			continue
		case wire.CodeUnavailable:
			x.end()
			lastErr, lastResp = nil, m
			if patient {
				attempts++
			}
			c.route.markDown(addr)
			avoid = addr
			continue
		}
		return x, nil
	}
	if lastResp != nil {
		return nil, fmt.Errorf("gave up after %d attempts: %w", tried, errorFor(lastResp, nil))
	}
	return nil, fmt.Errorf("%w (gave up after %d attempts; last error: %v)", ErrUnavailable, tried, lastErr)
}

// attempt sends req to addr once and waits for its response, at most
// RequestTimeout.
func (c *Client) attempt(ctx context.Context, addr string, req *wire.Msg, o callOpts) (*exchange, error) {
	// A dial to a dead node lasts DialTimeout (QUIC has no refusal to
	// listen to); a request waits for it only a little before it tries
	// another node. The dial goes on, and marks the node up if it works.
	wait := min(c.cfg.DialTimeout, attemptDialWait)
	if o.addr != "" {
		wait = c.cfg.DialTimeout // nowhere else to go
	}
	dctx, cancel := context.WithTimeout(ctx, wait)
	cn, err := c.conn(dctx, addr, o.s)
	cancel()
	if err != nil {
		if ctx.Err() == nil && dctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s: not connected within %v", addr, wait)
		}
		return nil, err
	}
	reqID := c.reqID.Add(1)
	req.ReqID = reqID
	if req.Seq != 0 {
		req.Ack = c.seqs.ack()
	}
	cl, err := cn.register(reqID, nil, 1+o.buf, o.keep)
	if err != nil {
		return nil, err
	}
	sent := c.clk.Now()
	if err := cn.send(req); err != nil {
		cn.unregister(reqID)
		return nil, err
	}
	t := time.NewTimer(c.cfg.RequestTimeout)
	defer t.Stop()
	var early []wire.Msg
	for {
		select {
		case r := <-cl.ch:
			if r.err != nil {
				return nil, r.err
			}
			if r.msg.Type == wire.TypeEvent {
				early = append(early, r.msg)
				continue
			}
			x := &exchange{resp: r.msg, early: early, cn: cn, cl: cl, reqID: reqID, sent: sent}
			if !o.keep || (r.msg.Code != wire.CodeOK && r.msg.Code != wire.CodeQueued) {
				cn.unregister(reqID)
				x.cl = nil
			}
			return x, nil
		case <-cn.done:
			cn.unregister(reqID)
			return nil, fmt.Errorf("%s: %w", addr, errConnLost)
		case <-t.C:
			cn.unregister(reqID)
			return nil, fmt.Errorf("no answer from %s within %v", addr, c.cfg.RequestTimeout)
		case <-ctx.Done():
			cn.unregister(reqID)
			return nil, ctx.Err()
		case <-o.s.ended():
			cn.unregister(reqID)
			return nil, o.s.Err()
		}
	}
}

// describe names a request in errors: `acquire "jobs/nightly"`.
func describe(m *wire.Msg) string {
	s := "lockd: " + m.Type.String()
	if m.Name != "" {
		s += fmt.Sprintf(" %q", m.Name)
	}
	return s
}
