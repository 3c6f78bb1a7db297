//go:build unix

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

// probe speaks internal/wire to one node on one stream. The tests use it to
// ask nodes what they believe (masters, lock status) independently of the
// client library and lockctl under test.
type probe struct {
	conn  *quicnet.Conn
	st    *quicnet.Stream
	mu    sync.Mutex
	calls map[uint64]chan wire.Msg
	reqID atomic.Uint64
}

func dialProbe(ctx context.Context, addr string, tlsConf *tls.Config) (*probe, error) {
	conn, err := quicnet.Dial(ctx, addr, tlsConf)
	if err != nil {
		return nil, err
	}
	st, err := conn.OpenStream(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	p := &probe{conn: conn, st: st, calls: map[uint64]chan wire.Msg{}}
	go p.readLoop()
	return p, nil
}

func (p *probe) close() { p.conn.Close() }

func (p *probe) readLoop() {
	defer func() {
		p.mu.Lock()
		for id, ch := range p.calls {
			close(ch)
			delete(p.calls, id)
		}
		p.calls = nil
		p.mu.Unlock()
	}()
	for {
		b, err := p.st.ReadFrame()
		if err != nil {
			return
		}
		m, err := wire.Decode(b)
		if err != nil || m.Type != wire.TypeResponse {
			continue
		}
		p.mu.Lock()
		ch := p.calls[m.ReqID]
		delete(p.calls, m.ReqID)
		p.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// call sends req and waits for its response until ctx ends.
func (p *probe) call(ctx context.Context, req wire.Msg) (wire.Msg, error) {
	req.ReqID = p.reqID.Add(1)
	ch := make(chan wire.Msg, 1)
	p.mu.Lock()
	if p.calls == nil {
		p.mu.Unlock()
		return wire.Msg{}, fmt.Errorf("connection closed")
	}
	p.calls[req.ReqID] = ch
	p.mu.Unlock()
	if err := p.st.WriteFrame(wire.Append(nil, &req)); err != nil {
		return wire.Msg{}, err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return wire.Msg{}, fmt.Errorf("connection closed")
		}
		return m, nil
	case <-ctx.Done():
		p.mu.Lock()
		delete(p.calls, req.ReqID)
		p.mu.Unlock()
		return wire.Msg{}, ctx.Err()
	}
}

// probeCall dials addr, sends one request and closes, all within timeout.
func probeCall(addr string, tlsConf *tls.Config, req wire.Msg, timeout time.Duration) (wire.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	p, err := dialProbe(ctx, addr, tlsConf)
	if err != nil {
		return wire.Msg{}, err
	}
	defer p.close()
	return p.call(ctx, req)
}

// nameInGroup returns a lock name with the given prefix that maps to group g.
func nameInGroup(prefix string, g uint32, groups int) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if wire.GroupOf(name, groups) == g {
			return name
		}
	}
}
