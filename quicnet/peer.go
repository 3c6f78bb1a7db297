package quicnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// maxBatch bounds how many queued messages a lane writer packs into one
// flush, so a flood on one lane still reaches the wire in bounded bites.
const maxBatch = 1024

// laneBufSize is the write and read buffer of one lane stream: the unit in
// which coalesced messages are handed to QUIC.
const laneBufSize = 64 << 10

// maxHeader bounds the stream header frame (sender ID and lane).
const maxHeader = 2 * binary.MaxVarintLen64

// peer is this node's link to one other node.
//
// Ownership: queues are channels (any goroutine sends, the lane's writer
// receives). conn and changed are guarded by mu. Counters are atomics.
type peer struct {
	n    *Node
	id   NodeID
	addr string
	dial bool // this node has the lower ID, so it dials this peer

	queues []chan []byte // one per lane; capacity Config.QueueLen

	mu      sync.Mutex
	conn    *quic.Conn    // the live connection, or nil
	changed chan struct{} // closed (and replaced) whenever conn changes

	connects, sent, dropped, lost, received atomic.Uint64

	// errFull is returned for every drop. Built once: a dead peer can
	// make Paxos drop at a high rate, and formatting an error per drop
	// would cost more than the send it replaces.
	errFull error
}

func newPeer(n *Node, id NodeID, addr string) *peer {
	p := &peer{
		n:       n,
		id:      id,
		addr:    addr,
		dial:    n.cfg.ID < id,
		queues:  make([]chan []byte, n.cfg.Lanes),
		changed: make(chan struct{}),
		errFull: fmt.Errorf("send to node %d: %w", id, ErrQueueFull),
	}
	for i := range p.queues {
		p.queues[i] = make(chan []byte, n.cfg.QueueLen)
	}
	return p
}

// start launches the lane writers and, if this node dials the peer, the
// dialer. They all stop when the node's context is cancelled.
func (p *peer) start() {
	for lane := range p.queues {
		p.n.wg.Go(func() { p.writeLoop(lane) })
	}
	if p.dial {
		p.n.wg.Go(p.dialLoop)
	}
}

// Send queues msg for peer to on lane (taken modulo Config.Lanes, so a Paxos
// group number may be passed directly: one group always maps to one lane,
// and messages on one lane arrive in order). Send never blocks: when the
// lane queue is full the message is dropped, counted, and ErrQueueFull
// returned. Send keeps msg until it is written: the caller must not modify
// it afterwards. Sending to the node's own ID fails with ErrSendToSelf.
func (n *Node) Send(to NodeID, lane int, msg []byte) error {
	if to == n.cfg.ID {
		return ErrSendToSelf
	}
	p, ok := (*n.peers.Load())[to]
	if !ok {
		return fmt.Errorf("send to node %d: %w", to, ErrUnknownPeer)
	}
	if lane < 0 {
		return fmt.Errorf("send to node %d: lane %d is negative", to, lane)
	}
	if len(msg) > n.cfg.MaxFrame {
		return fmt.Errorf("send to node %d: %w", to, &frameSizeError{size: uint64(len(msg)), limit: n.cfg.MaxFrame})
	}
	if n.closing.Load() {
		return fmt.Errorf("send to node %d: %w", to, ErrClosed)
	}
	select {
	case p.queues[lane%len(p.queues)] <- msg:
		return nil
	default:
		p.dropped.Add(1)
		return p.errFull
	}
}

// current returns the live connection (or nil) and a channel closed when it
// changes.
func (p *peer) current() (*quic.Conn, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn, p.changed
}

// install makes qc the peer's connection and returns the one it replaces.
// It refuses (returns false) once the node is closing: Close cancels the
// context before it sweeps connections, and this check happens under mu,
// so no connection can be installed behind the sweep.
func (p *peer) install(qc *quic.Conn) (old *quic.Conn, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n.ctx.Err() != nil {
		return nil, false
	}
	old, p.conn = p.conn, qc
	close(p.changed)
	p.changed = make(chan struct{})
	p.connects.Add(1)
	return old, true
}

// uninstall clears qc if it is still the peer's connection.
func (p *peer) uninstall(qc *quic.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == qc {
		p.conn = nil
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// closeConn closes the live connection, telling the peer; used by Close.
func (p *peer) closeConn() {
	qc, _ := p.current()
	if qc != nil {
		qc.CloseWithError(codeNormal, "node closing")
	}
}

// serve runs a connection to the peer until it ends: it installs it,
// accepts the peer's lane streams and starts a reader for each.
func (p *peer) serve(qc *quic.Conn) {
	old, ok := p.install(qc)
	if !ok {
		qc.CloseWithError(codeNormal, "node closing")
		return
	}
	if old != nil {
		p.n.log.Info("peer connection replaced by a newer one", "peer", p.id)
		old.CloseWithError(codeReplaced, "replaced by a newer connection")
	}
	p.n.log.Info("peer connected", "peer", p.id, "remote", qc.RemoteAddr(), "dialed", p.dial)
	// serve owns qc: however the loop ends (the connection failed, or the
	// node's context was cancelled, which also ends AcceptStream), close
	// it, or its lane readers would wait for the idle timeout and Close
	// with them.
	defer func() {
		p.uninstall(qc)
		qc.CloseWithError(codeNormal, "node closing")
	}()
	for {
		s, err := qc.AcceptStream(p.n.ctx)
		if err != nil {
			if p.n.ctx.Err() == nil {
				p.n.log.Info("peer connection ended", "peer", p.id, "err", err)
			}
			return
		}
		// Lanes are one-way: the peer writes, we read. Finish our
		// direction now so the stream can complete.
		s.Close()
		p.n.wg.Go(func() { p.readLane(qc, s) })
	}
}

// readLane reads one lane stream of qc and hands each message to Handler.
// The first frame is the header: the sender's ID, which must match the
// certificate, and the lane number.
func (p *peer) readLane(qc *quic.Conn, s *quic.Stream) {
	br := bufio.NewReaderSize(s, laneBufSize)
	hdr, err := ReadFrame(br, maxHeader)
	if err != nil {
		p.protocolError(qc, s, fmt.Errorf("read lane header: %w", err))
		return
	}
	from, n1 := binary.Uvarint(hdr)
	lane, n2 := binary.Uvarint(hdr[max(n1, 0):])
	switch {
	case n1 <= 0 || n2 <= 0 || n1+n2 != len(hdr):
		p.protocolError(qc, s, errors.New("malformed lane header"))
		return
	case from != uint64(p.id):
		err := fmt.Errorf("stream claims to come from node %d but the certificate is for node %d", from, p.id)
		p.n.warn.Warn(p.n.log, fmt.Sprintf("peer-claim/%d", p.id), "peer refused", "peer", p.id, "err", err)
		qc.CloseWithError(codeIdentity, err.Error())
		return
	case lane >= maxLanes:
		p.protocolError(qc, s, fmt.Errorf("lane %d is beyond the limit of %d", lane, maxLanes))
		return
	}
	for {
		msg, err := ReadFrame(br, p.n.cfg.MaxFrame)
		if err != nil {
			if qc.Context().Err() == nil && !errors.Is(err, io.EOF) {
				p.protocolError(qc, s, fmt.Errorf("lane %d: %w", lane, err))
			}
			return
		}
		p.received.Add(1)
		p.n.cfg.Handler(p.id, msg)
	}
}

// protocolError closes qc after a malformed stream unless the error is just
// the connection ending.
func (p *peer) protocolError(qc *quic.Conn, s *quic.Stream, err error) {
	s.CancelRead(0)
	if qc.Context().Err() != nil || errors.Is(err, net.ErrClosed) {
		return
	}
	p.n.warn.Warn(p.n.log, fmt.Sprintf("peer-protocol/%d", p.id), "peer protocol error", "peer", p.id, "err", err)
	qc.CloseWithError(codeProtocol, err.Error())
}

// writeLoop is the single writer of one lane: it waits for a connection,
// then streams the lane's queue into it until the connection fails, and
// starts over on the next connection.
func (p *peer) writeLoop(lane int) {
	ctx := p.n.ctx
	for {
		qc, changed := p.current()
		if qc != nil && qc.Context().Err() == nil {
			err := p.writeLane(qc, lane)
			if ctx.Err() != nil {
				return
			}
			// A write error on a live connection means the peer broke
			// the lane; close the connection so both sides start over.
			if qc.Context().Err() == nil {
				p.n.log.Warn("peer lane failed", "peer", p.id, "lane", lane, "err", err)
				qc.CloseWithError(codeProtocol, fmt.Sprintf("lane %d failed", lane))
			}
		}
		// Wait for the next connection (or the end of a dead one
		// whose uninstall is on its way).
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// writeLane opens lane's stream on qc and writes queued messages until an
// error. Coalescing: after the first message it takes everything already
// queued (up to maxBatch) into the buffer and flushes once, so one stream
// write carries the whole burst.
func (p *peer) writeLane(qc *quic.Conn, lane int) error {
	ctx := p.n.ctx
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open lane %d: %w", lane, err)
	}
	s.CancelRead(0) // nothing comes back on a lane
	bw := bufio.NewWriterSize(s, laneBufSize)
	hdr := binary.AppendUvarint(nil, uint64(p.n.cfg.ID))
	hdr = binary.AppendUvarint(hdr, uint64(lane))
	if err := writeFrame(bw, hdr); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write lane %d header: %w", lane, err)
	}
	q := p.queues[lane]
	for {
		var msg []byte
		select {
		case msg = <-q:
		case <-ctx.Done():
			s.CancelWrite(0)
			return ctx.Err()
		case <-qc.Context().Done():
			return context.Cause(qc.Context())
		}
		batch := 0
		for {
			batch++
			if err := writeFrame(bw, msg); err != nil {
				p.lost.Add(uint64(batch))
				return fmt.Errorf("write lane %d: %w", lane, err)
			}
			if batch == maxBatch {
				break
			}
			select {
			case msg = <-q:
				continue
			default:
			}
			break
		}
		if err := bw.Flush(); err != nil {
			p.lost.Add(uint64(batch))
			return fmt.Errorf("write lane %d: %w", lane, err)
		}
		p.sent.Add(uint64(batch))
	}
}

// dialLoop keeps one connection to a peer with a higher ID: dial, serve
// until the connection ends, pause, repeat. The pause starts at
// ReconnectMin and doubles after each failed attempt or short-lived
// connection, up to ReconnectMax, with jitter (a random half of it) so that
// nodes do not retry in lockstep. A connection that lasted at least
// ReconnectMax resets it.
func (p *peer) dialLoop() {
	cfg := p.n.cfg
	ctx := p.n.ctx
	tlsConf := cfg.TLS.Clone()
	tlsConf.NextProtos = []string{ALPNPeer}
	// The identity check: TLS verifies that the peer's certificate names
	// exactly this node, so a wrong address or a stolen slot is refused.
	tlsConf.ServerName = peerServerName(p.id)
	backoff := cfg.ReconnectMin
	failures := 0
	for ctx.Err() == nil {
		qc, err := p.dialOnce(ctx, tlsConf)
		if err == nil {
			failures = 0
			began := time.Now()
			p.serve(qc)
			if time.Since(began) >= cfg.ReconnectMax {
				backoff = cfg.ReconnectMin
			}
		} else if ctx.Err() == nil {
			failures++
			// The first failure is news; repeats while the peer stays
			// down are not.
			level := p.n.log.Debug
			if failures == 1 {
				level = p.n.log.Warn
			}
			level("dial peer failed", "peer", p.id, "addr", p.addr, "attempt", failures, "retry_in", backoff, "err", err)
		}
		pause := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, cfg.ReconnectMax)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// dialOnce resolves the peer's address and dials it once, within
// DialTimeout.
func (p *peer) dialOnce(ctx context.Context, tlsConf *tls.Config) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.n.cfg.DialTimeout)
	defer cancel()
	addr, err := resolveUDP(ctx, p.addr)
	if err != nil {
		return nil, err
	}
	qc, err := p.n.tr.Dial(ctx, addr, tlsConf, p.n.qconf)
	if err != nil {
		return nil, fmt.Errorf("dial node %d at %s: %w", p.id, p.addr, err)
	}
	return qc, nil
}

// stats snapshots the counters.
func (p *peer) stats() PeerStats {
	qc, _ := p.current()
	queued := 0
	for _, q := range p.queues {
		queued += len(q)
	}
	return PeerStats{
		ID:        p.id,
		Addr:      p.addr,
		Connected: qc != nil && qc.Context().Err() == nil,
		Connects:  p.connects.Load(),
		Sent:      p.sent.Load(),
		Dropped:   p.dropped.Load(),
		Lost:      p.lost.Load(),
		Received:  p.received.Load(),
		Queued:    queued,
	}
}
