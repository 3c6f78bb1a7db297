package server

import (
	"context"
	"errors"
	"sync"

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
		cs.s.log.Warn("closing a client stream that does not read its events", "client", cs.client)
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
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		cs := &clientStream{s: s, conn: conn, st: st, out: make(chan []byte, streamQueue), done: make(chan struct{}), client: conn.PeerName()}
		wg.Add(2)
		go func() {
			defer wg.Done()
			cs.writeLoop()
		}()
		go func() {
			defer wg.Done()
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
			return
		}
		req, err := wire.Decode(b)
		if err != nil {
			cs.push(&wire.Msg{Type: wire.TypeResponse, Code: wire.CodeBadRequest, Err: err.Error()})
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
