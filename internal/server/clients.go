package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

const (
	// streamQueue bounds the frames waiting to be written to one client
	// stream. A client that does not read its responses and events is cut
	// off rather than allowed to hold memory or block the node.
	streamQueue = 4096
	// maxInFlight bounds the requests of one stream being worked on at once.
	maxInFlight = 512
)

// clientStream is one stream of a client connection: requests come in, and
// responses and events go out through a bounded queue drained by one writer.
type clientStream struct {
	s      *Server
	conn   *quicnet.Conn
	st     *quicnet.Stream
	out    chan []byte
	done   chan struct{}
	once   sync.Once
	client string // verified certificate name
	who    Identity
	idst   *identityState
	// refuse, when set, answers the stream's first request and closes it
	// (a connection or stream past its identity's cap).
	refuse     *wire.Msg
	refuseConn bool // refuse closes the whole connection

	mu            sync.Mutex
	watched       map[string]bool // names watched, counted against the cap
	masterWatches int
}

// push queues m for the client. It never blocks: when the queue is full the
// stream is closed and the client reconnects and resubscribes.
func (cs *clientStream) push(m *wire.Msg) {
	b := wire.Append(nil, m)
	select {
	case cs.out <- b:
	case <-cs.done:
	default:
		cs.s.metrics.slowClients.Inc()
		cs.s.warn.Warn(cs.s.log, "slow/"+cs.who.Name, "closing a client stream that does not read its events", "client", cs.client)
		cs.close()
	}
}

func (cs *clientStream) close() {
	cs.once.Do(func() {
		close(cs.done)
		cs.st.Close()
	})
}

// serveClients accepts client connections until ctx ends. A new connection is
// served at once (field report F5): Accept hands it over as soon as the
// handshake completes, and its first stream is read right away.
func (s *Server) serveClients(ctx context.Context) {
	for {
		conn, err := s.qnode.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, quicnet.ErrClosed) {
				s.log.Warn("accepting client connections stopped", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, conn *quicnet.Conn) {
	defer conn.Close()
	s.obs.clientConn(1)
	defer s.obs.clientConn(-1)
	who := identityOf(conn.PeerCertificate(), conn.PeerName())
	idst := s.ids.get(who.Name)
	lim := s.policy.Load().limitsFor(who.Name)
	var refuse *wire.Msg
	if n, ok := idst.take(&idst.conns, lim.Connections); ok {
		defer idst.give(&idst.conns)
	} else {
		refuse = fail(wire.CodeLimit, "identity %s already has %d connections to node %d, the limit (connections per identity: %d): close some first", who.Name, n, s.cfg.ID, lim.Connections)
		s.warn.Warn(s.log, "conns/"+who.Name, "client connection refused: over its identity's connection cap", "client", who.Name, "cap", lim.Connections, "remote", conn.RemoteAddr())
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	var streams atomic.Int64
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		cs := &clientStream{s: s, conn: conn, st: st, out: make(chan []byte, streamQueue), done: make(chan struct{}), client: conn.PeerName(),
			who: who, idst: idst, refuse: refuse, refuseConn: refuse != nil}
		if n := streams.Add(1); n > int64(lim.StreamsPerConn) && refuse == nil {
			cs.refuse = fail(wire.CodeLimit, "this connection already has %d streams, the limit (streams_per_connection: %d): use fewer streams", n-1, lim.StreamsPerConn)
			s.warn.Warn(s.log, "streams/"+who.Name, "client stream refused: over the streams-per-connection cap", "client", who.Name, "cap", lim.StreamsPerConn)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			cs.writeLoop()
		}()
		go func() {
			defer wg.Done()
			defer streams.Add(-1)
			defer cs.release()
			cs.readLoop(ctx)
		}()
	}
}

func (cs *clientStream) writeLoop() {
	for {
		select {
		case b := <-cs.out:
			if err := cs.st.WriteFrame(b); err != nil {
				cs.close()
				return
			}
			cs.s.obs.countClient(0, len(b))
		case <-cs.done:
			return
		}
	}
}

// readLoop decodes requests and works on them with bounded concurrency.
func (cs *clientStream) readLoop(ctx context.Context) {
	defer cs.s.hub.dropStream(cs)
	defer cs.close()
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		b, err := cs.st.ReadFrame()
		if err != nil {
			cs.frameError(err)
			return
		}
		cs.s.obs.countClient(len(b), 0)
		req, err := wire.Decode(b)
		if err != nil {
			// A client that sends what it cannot encode is broken or
			// hostile: say why, then close the stream.
			cs.s.warn.Warn(cs.s.log, "malformed/"+cs.who.Name, "malformed frame on a client stream; closing the stream", "client", cs.who.Name, "err", err)
			cs.sayAndClose(&wire.Msg{Type: wire.TypeResponse, Code: wire.CodeBadRequest, Node: uint32(cs.s.cfg.ID),
				Err: "malformed request: " + err.Error() + "; the stream is closed"})
			return
		}
		if cs.refuse != nil {
			m := *cs.refuse
			m.Type, m.ReqID, m.Node = wire.TypeResponse, req.ReqID, uint32(cs.s.cfg.ID)
			cs.sayAndClose(&m)
			if cs.refuseConn {
				// Over the connection cap: drop the connection too, once
				// the answer had time to get out (closing at once would
				// discard it), unless the client hangs up first.
				conn := cs.conn
				go func() {
					select {
					case <-conn.Done():
					case <-time.After(2 * time.Second):
					}
					conn.Close()
				}()
			}
			return
		}
		if req.Type != wire.TypeKeepAlive && !cs.idst.allow(cs.s.policy.Load().limitsFor(cs.who.Name), time.Now()) {
			lim := cs.s.policy.Load().limitsFor(cs.who.Name)
			cs.s.metrics.requests.WithLabelValues(req.Type.String(), "rate_limited").Inc()
			cs.push(&wire.Msg{Type: wire.TypeResponse, ReqID: req.ReqID, Node: uint32(cs.s.cfg.ID), Code: wire.CodeOverloaded,
				Err: fmt.Sprintf("identity %s is over its request rate (requests_per_second: %g, request_burst: %d) on node %d; retry after a short pause", cs.who.Name, lim.RequestsPerSecond, lim.RequestBurst, cs.s.cfg.ID)})
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-cs.done:
			return
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp := cs.s.handle(ctx, cs, &req)
			if resp != nil {
				resp.Type = wire.TypeResponse
				resp.ReqID = req.ReqID
				resp.Node = uint32(cs.s.cfg.ID)
				cs.s.metrics.requests.WithLabelValues(req.Type.String(), codeName(resp.Code)).Inc()
				cs.push(resp)
			}
		}()
	}
}

// frameError answers a stream whose framing is broken (a frame over the
// size limit, an unknown frame version) with an error frame that says why,
// before the stream closes: such a client cannot be read any further, but
// it should learn what it did wrong. A stream that merely ended gets
// nothing.
func (cs *clientStream) frameError(err error) {
	var why string
	code := wire.CodeBadRequest
	switch {
	case errors.Is(err, quicnet.ErrFrameTooLarge):
		code = wire.CodeLimit
		why = fmt.Sprintf("request too large: %v (the frame limit); lock metadata is limited far below it, see MaxMetadataBytes; the stream is closed", errors.Unwrap(err))
	case errors.Is(err, quicnet.ErrFrameVersion):
		why = fmt.Sprintf("malformed request frame: %v; the stream is closed", errors.Unwrap(err))
	default:
		return
	}
	cs.s.warn.Warn(cs.s.log, "malformed/"+cs.who.Name, "malformed frame on a client stream; closing the stream", "client", cs.who.Name, "err", err)
	cs.sayAndClose(&wire.Msg{Type: wire.TypeResponse, Code: code, Node: uint32(cs.s.cfg.ID), Err: why})
}

// sayAndClose writes m as the stream's last frame and closes the stream.
// The frame goes out directly (WriteFrame is safe alongside the writer),
// ahead of whatever is still queued.
func (cs *clientStream) sayAndClose(m *wire.Msg) {
	_ = cs.st.SetDeadline(time.Now().Add(5 * time.Second)) // a client that does not read cannot hold us
	_ = cs.st.WriteFrame(wire.Append(nil, m))
	cs.close()
}

// release gives back what the stream counted against its identity.
func (cs *clientStream) release() {
	cs.mu.Lock()
	n, m := len(cs.watched), cs.masterWatches
	cs.watched, cs.masterWatches = nil, 0
	cs.mu.Unlock()
	if n == 0 && m == 0 {
		return
	}
	cs.idst.mu.Lock()
	cs.idst.watches -= n
	cs.idst.masterWatches -= m
	cs.idst.mu.Unlock()
}

// addWatch counts a watch of name against the identity's cap; watching a
// name the stream already watches is free.
func (cs *clientStream) addWatch(name string, lim IdentityLimits) *wire.Msg {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.watched[name] {
		return nil
	}
	if n, ok := cs.idst.take(&cs.idst.watches, lim.Watches); !ok {
		return fail(wire.CodeLimit, "identity %s already has %d watches on node %d, the limit (watches per identity: %d): unwatch some first", cs.who.Name, n, cs.s.cfg.ID, lim.Watches)
	}
	if cs.watched == nil {
		cs.watched = map[string]bool{}
	}
	cs.watched[name] = true
	return nil
}

func (cs *clientStream) dropWatch(name string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.watched[name] {
		delete(cs.watched, name)
		cs.idst.give(&cs.idst.watches)
	}
}

// addMasterWatch counts a master watch against the identity's cap until
// its stream of events ends (dropMasterWatch) or the client stream closes.
func (cs *clientStream) addMasterWatch(lim IdentityLimits) *wire.Msg {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if n, ok := cs.idst.take(&cs.idst.masterWatches, lim.MasterWatches); !ok {
		return fail(wire.CodeLimit, "identity %s already has %d master watches on node %d, the limit (master_watches per identity: %d): close streams it no longer uses", cs.who.Name, n, cs.s.cfg.ID, lim.MasterWatches)
	}
	cs.masterWatches++
	return nil
}

// dropMasterWatch gives back one master watch whose event stream ended.
func (cs *clientStream) dropMasterWatch() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.masterWatches > 0 {
		cs.masterWatches--
		cs.idst.give(&cs.idst.masterWatches)
	}
}
