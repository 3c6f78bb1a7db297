package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

// rawHolder is a lock holder that talks to exactly one node over the wire
// protocol, as a process on that node's machine would, and dies with it: it
// never fails over, so that the failover workload can stop its node and
// know that nobody keeps its session alive. It also tells exactly when its
// last keep-alive was answered, which the public client does not.
type rawHolder struct {
	qc      *quicnet.Conn
	st      *quicnet.Stream
	client  uint64
	seq     uint64
	reqID   uint64
	group   uint32
	session uint64
	// waitReq is the ReqID of a queued acquire; granted when it was
	// granted (zero until then).
	waitReq uint64
	granted time.Time
}

func dialHolder(ctx context.Context, addr string, tc *tls.Config, group uint32) (*rawHolder, error) {
	qc, err := quicnet.Dial(ctx, addr, tc)
	if err != nil {
		return nil, fmt.Errorf("holder: connect to %s: %w", addr, err)
	}
	st, err := qc.OpenStream(ctx)
	if err != nil {
		qc.Close()
		return nil, fmt.Errorf("holder: open stream to %s: %w", addr, err)
	}
	return &rawHolder{qc: qc, st: st, client: rand.Uint64N(1<<63-1) + 1, group: group}, nil
}

// call sends m and waits for its response, within ctx.
func (h *rawHolder) call(ctx context.Context, m *wire.Msg) (*wire.Msg, error) {
	h.reqID++
	m.ReqID = h.reqID
	if err := h.st.WriteFrame(wire.Append(nil, m)); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		h.st.SetDeadline(dl)
		defer h.st.SetDeadline(time.Time{})
	}
	for range 1000 {
		b, err := h.st.ReadFrame()
		if err != nil {
			return nil, err
		}
		resp, err := wire.Decode(b)
		if err != nil {
			return nil, err
		}
		if resp.Type == wire.TypeResponse && resp.ReqID == m.ReqID {
			if resp.Code != wire.CodeOK {
				return &resp, fmt.Errorf("holder: %v refused: code %d: %s", m.Type, resp.Code, resp.Err)
			}
			return &resp, nil
		}
	}
	return nil, fmt.Errorf("holder: no response to %v among 1000 frames", m.Type)
}

// command sends a command with the next sequence number.
func (h *rawHolder) command(ctx context.Context, m *wire.Msg) (*wire.Msg, error) {
	h.seq++
	m.Client, m.Seq, m.Ack, m.Group = h.client, h.seq, h.seq, h.group
	return h.call(ctx, m)
}

// open opens the holder's session with ttl.
func (h *rawHolder) open(ctx context.Context, ttl time.Duration) error {
	resp, err := h.command(ctx, &wire.Msg{Type: wire.TypeOpenSession, TTL: ttl})
	if err != nil {
		return err
	}
	h.session = resp.Session
	return nil
}

// hold opens a session with ttl and acquires name with it.
func (h *rawHolder) hold(ctx context.Context, name string, ttl time.Duration) error {
	if err := h.open(ctx, ttl); err != nil {
		return err
	}
	_, err := h.command(ctx, &wire.Msg{Type: wire.TypeAcquire, Session: h.session, Name: name})
	return err
}

// keepAlive renews the session and returns once the node answered.
func (h *rawHolder) keepAlive(ctx context.Context) error {
	resp, err := h.call(ctx, &wire.Msg{Type: wire.TypeKeepAlive, KeepAlives: []wire.KeepAliveItem{{Group: h.group, Session: h.session}}})
	if err != nil {
		return err
	}
	if len(resp.KeepAlives) != 1 || resp.KeepAlives[0].Code != wire.CodeOK {
		return fmt.Errorf("holder: keep-alive of session %d refused: %+v", h.session, resp.KeepAlives)
	}
	return nil
}

func (h *rawHolder) close() { h.qc.Close() }

// redial moves the holder to the node at addr, keeping its client id,
// sequence numbers and session: what a client does after a failover.
func (h *rawHolder) redial(ctx context.Context, addr string, tc *tls.Config) error {
	h.qc.Close()
	nh, err := dialHolder(ctx, addr, tc, h.group)
	if err != nil {
		return err
	}
	h.qc, h.st = nh.qc, nh.st
	return nil
}

// queue asks for name with FlagWait under sequence number seq (0: the next
// one) and returns the sequence number used; the response must be Queued.
func (h *rawHolder) queue(ctx context.Context, name string, seq uint64) (uint64, error) {
	if seq == 0 {
		h.seq++
		seq = h.seq
	}
	m := &wire.Msg{Type: wire.TypeAcquire, Client: h.client, Seq: seq, Ack: seq, Group: h.group,
		Session: h.session, Name: name, Flags: wire.FlagWait}
	h.reqID++
	m.ReqID = h.reqID
	h.waitReq = m.ReqID
	if err := h.st.WriteFrame(wire.Append(nil, m)); err != nil {
		return seq, err
	}
	for range 1000 {
		if dl, ok := ctx.Deadline(); ok {
			h.st.SetDeadline(dl)
		}
		b, err := h.st.ReadFrame()
		if err != nil {
			return seq, err
		}
		resp, err := wire.Decode(b)
		if err != nil {
			return seq, err
		}
		if resp.ReqID != m.ReqID {
			continue
		}
		if resp.Type == wire.TypeEvent && resp.Kind == wire.EventGranted {
			h.granted = time.Now()
			continue
		}
		if resp.Type == wire.TypeResponse {
			h.st.SetDeadline(time.Time{})
			if resp.Code == wire.CodeOK {
				h.granted = time.Now()
				return seq, nil
			}
			if resp.Code != wire.CodeQueued {
				return seq, fmt.Errorf("waiter: acquire %s refused: code %d: %s", name, resp.Code, resp.Err)
			}
			return seq, nil
		}
	}
	return seq, fmt.Errorf("waiter: no response to acquire among 1000 frames")
}

// awaitGrant waits for the grant of the queued acquire, sending a
// keep-alive every second meanwhile, until ctx ends.
func (h *rawHolder) awaitGrant(ctx context.Context) (time.Time, error) {
	ka := &wire.Msg{Type: wire.TypeKeepAlive, KeepAlives: []wire.KeepAliveItem{{Group: h.group, Session: h.session}}}
	for h.granted.IsZero() {
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
		h.reqID++
		ka.ReqID = h.reqID
		h.st.SetDeadline(time.Time{}) // the read deadline below applies to writes too
		if err := h.st.WriteFrame(wire.Append(nil, ka)); err != nil {
			return time.Time{}, err
		}
		next := time.Now().Add(time.Second)
		h.st.SetDeadline(next)
		for time.Now().Before(next) {
			b, err := h.st.ReadFrame()
			if err != nil {
				break // the deadline: keep alive again
			}
			m, err := wire.Decode(b)
			if err != nil {
				return time.Time{}, err
			}
			if m.Type == wire.TypeEvent && m.ReqID == h.waitReq && m.Kind == wire.EventGranted {
				h.granted = time.Now()
				break
			}
			if m.Type == wire.TypeEvent && m.ReqID == h.waitReq && m.Kind != wire.EventGranted {
				return time.Time{}, fmt.Errorf("waiter: event %d instead of a grant: %s", m.Kind, m.Err)
			}
		}
	}
	h.st.SetDeadline(time.Time{})
	return h.granted, nil
}
