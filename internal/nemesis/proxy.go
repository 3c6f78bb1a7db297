package nemesis

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Action is what the proxy does with one datagram.
type Action struct {
	Drop  bool
	Delay time.Duration
	Dup   bool // send it twice (the copy after the same delay)
}

// Filter decides the fate of a datagram from endpoint from to endpoint to
// (names such as "n1" for node 1 and "c2" for worker client 2; see
// Proxy.Classify). It must be safe for concurrent use.
type Filter func(from, to string) Action

// Proxy is a UDP relay in front of one node. Peers and clients send to its
// front address; it forwards each datagram to the node's private address
// from a relay socket of its own per source (so the node answers the relay,
// as it would a NAT), and the node's answers go back to the source from the
// front address. QUIC needs nothing more: its connection IDs, not the
// 4-tuple, name a connection, and the node sees a stable relay address.
type Proxy struct {
	name   string // the node's endpoint name, "n1"
	front  *net.UDPConn
	target *net.UDPAddr
	// Classify names the endpoint behind a source address ("n2", "c1", or
	// "x" for anything else). Set before Start; called once per new source.
	Classify func(*net.UDPAddr) string

	filter atomic.Pointer[Filter]

	mu     sync.Mutex
	relays map[string]*relay
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup

	// Packets counts datagrams seen (both directions); Dropped those dropped.
	Packets, Dropped atomic.Int64
}

type relay struct {
	src  *net.UDPAddr
	who  string
	conn *net.UDPConn
	last atomic.Int64 // unix nanos of the last datagram either way
}

// NewProxy listens on a free port of 127.0.0.1 for node name, whose real
// address is target.
func NewProxy(name string, target *net.UDPAddr) (*Proxy, error) {
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &Proxy{name: name, front: front, target: target, relays: map[string]*relay{}, done: make(chan struct{})}
	p.Classify = func(*net.UDPAddr) string { return "x" }
	return p, nil
}

// Addr is the front address, the one peers and clients use.
func (p *Proxy) Addr() *net.UDPAddr { return p.front.LocalAddr().(*net.UDPAddr) }

// SetFilter replaces the filter; nil passes everything unchanged.
func (p *Proxy) SetFilter(f Filter) {
	if f == nil {
		p.filter.Store(nil)
		return
	}
	p.filter.Store(&f)
}

func (p *Proxy) decide(from, to string) Action {
	f := p.filter.Load()
	if f == nil {
		return Action{}
	}
	return (*f)(from, to)
}

// Start runs the relay until Close.
func (p *Proxy) Start() {
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.readFront()
	}()
	go func() {
		defer p.wg.Done()
		p.reap()
	}()
}

// Close stops the proxy and its relays.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	p.front.Close()
	for _, r := range p.relays {
		r.conn.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// send sends b on conn to addr according to the filter.
func (p *Proxy) send(conn *net.UDPConn, addr *net.UDPAddr, b []byte, from, to string) {
	p.Packets.Add(1)
	a := p.decide(from, to)
	if a.Drop {
		p.Dropped.Add(1)
		return
	}
	n := 1
	if a.Dup {
		n = 2
	}
	if a.Delay <= 0 {
		for range n {
			conn.WriteToUDP(b, addr)
		}
		return
	}
	c := append([]byte(nil), b...)
	time.AfterFunc(a.Delay, func() {
		for range n {
			conn.WriteToUDP(c, addr)
		}
	})
}

func (p *Proxy) readFront() {
	buf := make([]byte, 65536)
	for {
		n, src, err := p.front.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		r := p.relayFor(src)
		if r == nil {
			return
		}
		r.last.Store(time.Now().UnixNano())
		p.send(r.conn, p.target, buf[:n], r.who, p.name)
	}
}

// relayFor returns the relay of source src, making it (and its reader) on
// the first datagram.
func (p *Proxy) relayFor(src *net.UDPAddr) *relay {
	key := src.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if r := p.relays[key]; r != nil {
		return r
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil
	}
	r := &relay{src: &net.UDPAddr{IP: src.IP, Port: src.Port}, who: p.Classify(src), conn: conn}
	r.last.Store(time.Now().UnixNano())
	p.relays[key] = r
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			r.last.Store(time.Now().UnixNano())
			p.send(p.front, r.src, buf[:n], p.name, r.who)
		}
	}()
	return r
}

// reap closes relays idle for a minute (their source went away), so that
// a port reused by another process is classified afresh.
func (p *Proxy) reap() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		cut := time.Now().Add(-time.Minute).UnixNano()
		for k, r := range p.relays {
			if r.last.Load() < cut {
				r.conn.Close()
				delete(p.relays, k)
			}
		}
		p.mu.Unlock()
	}
}
