package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

// errConnLost is what pending calls get when their connection ends.
var errConnLost = errors.New("connection lost")

// reply is what a call receives: a frame with its ReqID, or the error that
// ended its connection.
type reply struct {
	reqID uint64
	msg   wire.Msg
	err   error
}

// call is a request waiting for its answer. The reader delivers into ch
// without ever blocking: ch has room for everything the call expects, and
// what does not fit is dropped and counted in overflow (only event streams
// can overflow, and their owners resubscribe).
type call struct {
	ch chan reply
	// keep leaves the call registered after its response, for the events
	// that follow (Watch, WatchMasters, a waiting Acquire); its owner
	// unregisters it.
	keep     bool
	overflow bool // guarded by conn.mu
}

// conn is the client's connection to one node: one QUIC connection with one
// long-lived stream, and one goroutine that first dials and then reads,
// dispatching each frame to the call with its ReqID.
type conn struct {
	c     *Client
	addr  string
	ready chan struct{} // closed when the dial ended; then qc, st or err are set
	done  chan struct{} // closed when the connection ended (after ready)
	qc    *quicnet.Conn
	st    *quicnet.Stream
	// dialErr says why the dial failed; written before ready closes.
	dialErr error

	mu     sync.Mutex // guards the fields below
	calls  map[uint64]*call
	closed bool
	// onReady runs once the dial has ended, either way (see notify).
	onReady []func()
	// endErr says why the connection ended; written before done closes.
	endErr error
}

// connect returns the connection to addr, dialing it in the background if
// there is none. The returned conn may still be dialing: see ready.
func (c *Client) connect(addr string) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cn := c.conns[addr]; cn != nil {
		select {
		case <-cn.done: // ended; its goroutine is about to forget it
		default:
			return cn, nil
		}
	}
	cn := &conn{c: c, addr: addr, ready: make(chan struct{}), done: make(chan struct{}), calls: map[uint64]*call{}}
	c.conns[addr] = cn
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runConn(cn)
	}()
	return cn, nil
}

// conn returns a ready connection to addr, waiting for the dial within ctx
// and while the session s lives (s may be nil).
func (c *Client) conn(ctx context.Context, addr string, s *Session) (*conn, error) {
	cn, err := c.connect(addr)
	if err != nil {
		return nil, err
	}
	select {
	case <-cn.ready:
		if cn.dialErr != nil {
			return nil, cn.dialErr
		}
		return cn, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ended():
		return nil, s.Err()
	}
}

// notify runs f once cn's dial has ended (at once if it has). f must not
// block: it runs on the connection's goroutine.
func (cn *conn) notify(f func()) {
	cn.mu.Lock()
	select {
	case <-cn.ready:
		cn.mu.Unlock()
		f()
		return
	default:
	}
	cn.onReady = append(cn.onReady, f)
	cn.mu.Unlock()
}

// dialEnded closes ready and runs the notify callbacks.
func (cn *conn) dialEnded() {
	cn.mu.Lock()
	close(cn.ready)
	fs := cn.onReady
	cn.onReady = nil
	cn.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// runConn is the connection's goroutine: it dials, then reads until the
// connection ends, then fails every pending call and forgets the conn.
func (c *Client) runConn(cn *conn) {
	defer func() {
		c.mu.Lock()
		if c.conns[cn.addr] == cn {
			delete(c.conns, cn.addr)
		}
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	qc, err := c.dial(ctx, cn.addr, c.cfg.TLS)
	var st *quicnet.Stream
	if err == nil {
		st, err = qc.OpenStream(ctx)
		if err != nil {
			qc.Close()
		}
	}
	cancel()
	if err != nil {
		cn.dialErr = fmt.Errorf("connect to %s: %w", cn.addr, err)
		c.route.markDown(cn.addr)
		cn.shut(cn.dialErr)
		cn.dialEnded()
		close(cn.done)
		c.log.Debug("lockd: connect failed", "node", cn.addr, "err", err)
		return
	}
	cn.qc, cn.st = qc, st
	c.route.markUp(cn.addr)
	cn.dialEnded()
	stop := context.AfterFunc(c.ctx, func() { qc.Close() })
	defer stop()
	err = cn.readLoop(c)
	qc.Close()
	endErr := fmt.Errorf("connection to %s: %w: %v", cn.addr, errConnLost, err)
	if c.ctx.Err() == nil {
		c.route.markDown(cn.addr)
		c.log.Debug("lockd: connection lost", "node", cn.addr, "err", err)
	}
	for reqID, cl := range cn.shut(endErr) {
		select {
		case cl.ch <- reply{reqID: reqID, err: endErr}:
		default:
		}
	}
	close(cn.done)
}

// shut marks the conn closed because of err and returns the calls that
// were pending.
func (cn *conn) shut(err error) map[uint64]*call {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	cn.closed = true
	cn.endErr = err
	calls := cn.calls
	cn.calls = map[uint64]*call{}
	return calls
}

// readLoop reads frames until the stream fails, and hands each to its call.
// A frame nobody waits for (a late answer to a call that gave up) is dropped.
func (cn *conn) readLoop(c *Client) error {
	for {
		b, err := cn.st.ReadFrame()
		if err != nil {
			return err
		}
		m, err := wire.Decode(b)
		if err != nil {
			// A node that sends what we cannot decode speaks another
			// protocol; nothing on this connection can be trusted.
			return fmt.Errorf("undecodable frame: %w", err)
		}
		if m.Type == wire.TypeResponse && m.ReqID == 0 {
			c.log.Warn("lockd: a node could not decode a request", "node", cn.addr, "err", m.Err)
			continue
		}
		cn.mu.Lock()
		cl := cn.calls[m.ReqID]
		if cl != nil && m.Type == wire.TypeResponse && !cl.keep {
			delete(cn.calls, m.ReqID)
		}
		if cl != nil {
			select {
			case cl.ch <- reply{reqID: m.ReqID, msg: m}:
			default:
				cl.overflow = true
			}
		}
		cn.mu.Unlock()
	}
}

// register adds a call for reqID. ch receives its frames; when nil, a
// channel with room for buf frames is made.
func (cn *conn) register(reqID uint64, ch chan reply, buf int, keep bool) (*call, error) {
	if ch == nil {
		ch = make(chan reply, buf)
	}
	cl := &call{ch: ch, keep: keep}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.closed {
		return nil, cn.endErr
	}
	cn.calls[reqID] = cl
	return cl, nil
}

// unregister forgets the call for reqID; later frames for it are dropped.
func (cn *conn) unregister(reqID uint64) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	delete(cn.calls, reqID)
}

// overflowed reports whether frames for cl were dropped.
func (cn *conn) overflowed(cl *call) bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cl.overflow
}

// send writes m as one frame. A write error ends the connection, so that
// every call on it learns at once.
func (cn *conn) send(m *wire.Msg) error {
	if cn.c.dropSends.Load() {
		return nil
	}
	if err := cn.st.WriteFrame(wire.Append(nil, m)); err != nil {
		cn.qc.Close()
		return fmt.Errorf("send to %s: %w: %v", cn.addr, errConnLost, err)
	}
	return nil
}
