package quicnet

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Direction selects which packets a partition drops, seen from the
// FaultConn's side.
type Direction uint8

// Directions for FaultConn.Partition.
const (
	Outbound Direction = 1 << iota // packets this socket sends to the address
	Inbound                        // packets this socket receives from the address
	Both     = Outbound | Inbound
)

// Link describes the faults applied to packets sent to one destination.
// The zero Link passes packets through untouched.
type Link struct {
	// Delay is added to every packet (one way: only what this socket
	// sends). Delayed packets are held, never dropped, by the delay
	// mechanism.
	Delay time.Duration
	// Jitter spreads each packet's delay uniformly over
	// [Delay-Jitter, Delay+Jitter] (never below zero); packets may be
	// reordered, as on a real path.
	Jitter time.Duration
	// Loss is the probability, 0 to 1, that a packet is dropped.
	Loss float64
	// Duplicate is the probability, 0 to 1, that a packet is sent twice
	// (each copy delayed on its own).
	Duplicate float64
}

func (l Link) validate() error {
	switch {
	case l.Delay < 0 || l.Jitter < 0:
		return fmt.Errorf("link: delay %v and jitter %v must not be negative", l.Delay, l.Jitter)
	case !(l.Loss >= 0 && l.Loss <= 1):
		return fmt.Errorf("link: loss %v must be within 0..1", l.Loss)
	case !(l.Duplicate >= 0 && l.Duplicate <= 1):
		return fmt.Errorf("link: duplicate %v must be within 0..1", l.Duplicate)
	}
	return nil
}

// FaultConfig configures a FaultConn.
type FaultConfig struct {
	// Seed seeds the FaultConn's random source, so one seed replays the
	// same sequence of loss, duplication and jitter decisions for the same
	// sequence of packets.
	Seed uint64
}

// FaultStats counts what a FaultConn did to packets. Counters only grow.
type FaultStats struct {
	Sent       uint64 // packets written to the socket, copies included
	Received   uint64 // packets returned to the reader
	Lost       uint64 // outbound packets dropped by Link.Loss
	Duplicated uint64 // extra copies sent by Link.Duplicate
	Delayed    uint64 // packets that went through the delay queue
	Blocked    uint64 // packets dropped by a partition, either direction
}

// FaultConn wraps a net.PacketConn (the node's UDP socket) and injects
// faults: per-destination delay with jitter, loss and duplication (Link),
// and one-way partitions. Everything can be changed while traffic flows.
//
// It deliberately implements only net.PacketConn plus SetReadBuffer and
// SetWriteBuffer: because it is not a quic.OOBCapablePacketConn, quic-go
// reads and writes every packet through ReadFrom and WriteTo, where the
// faults apply (it then does without ECN, GSO and batched reads, which only
// matter for speed). SyscallConn is withheld too, so quic-go does not set
// socket options behind the wrapper's back.
//
// Delayed packets wait in one heap, served by one scheduler goroutine per
// FaultConn: no goroutine per packet, and no packet lost by the delay
// mechanism. Close stops the scheduler, drops what is still delayed, and
// closes the wrapped connection.
type FaultConn struct {
	pc net.PacketConn

	mu       sync.Mutex // guards everything below
	rng      *rand.Rand
	def      Link
	links    map[netip.AddrPort]Link
	dropTo   map[netip.AddrPort]bool
	dropFrom map[netip.AddrPort]bool
	queue    delayHeap
	seq      uint64 // tie-break: equal due times leave in send order
	stats    FaultStats
	closed   bool

	wake chan struct{} // capacity 1: tells the scheduler the heap top changed
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the scheduler has returned
}

// NewFaultConn wraps pc. It starts with no faults. The FaultConn owns pc
// from now on and closes it in Close.
func NewFaultConn(pc net.PacketConn, cfg FaultConfig) *FaultConn {
	f := &FaultConn{
		pc:       pc,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		links:    make(map[netip.AddrPort]Link),
		dropTo:   make(map[netip.AddrPort]bool),
		dropFrom: make(map[netip.AddrPort]bool),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go f.schedule()
	return f
}

// addrKey normalizes a UDP address for map lookups (IPv4-mapped IPv6
// addresses compare equal to their IPv4 form).
func addrKey(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok || ua == nil {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// SetLink sets the faults for packets sent to addr; a nil addr sets the
// default for every destination without a link of its own.
func (f *FaultConn) SetLink(addr net.Addr, l Link) error {
	if err := l.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if addr == nil {
		f.def = l
		return nil
	}
	k, ok := addrKey(addr)
	if !ok {
		return fmt.Errorf("link: %v is not a UDP address", addr)
	}
	f.links[k] = l
	return nil
}

// Partition drops packets to and/or from addr, per dir, until Heal.
// Partitions add up: Partition(a, Outbound) then Partition(a, Inbound)
// blocks both ways.
func (f *FaultConn) Partition(addr net.Addr, dir Direction) error {
	k, ok := addrKey(addr)
	if !ok {
		return fmt.Errorf("partition: %v is not a UDP address", addr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if dir&Outbound != 0 {
		f.dropTo[k] = true
	}
	if dir&Inbound != 0 {
		f.dropFrom[k] = true
	}
	return nil
}

// Heal removes every partition; links (delay, loss, duplication) stay.
func (f *FaultConn) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.dropTo)
	clear(f.dropFrom)
}

// Reset removes every partition and every link, default included: packets
// flow untouched again. Packets already delayed still leave at their time.
func (f *FaultConn) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def = Link{}
	clear(f.links)
	clear(f.dropTo)
	clear(f.dropFrom)
}

// Stats returns the counters.
func (f *FaultConn) Stats() FaultStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// WriteTo applies the link faults for addr and sends, delays or drops p. A
// dropped packet still reports success, as a real lossy network would.
func (f *FaultConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	k, keyed := addrKey(addr)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return 0, net.ErrClosed
	}
	link := f.def
	if keyed {
		if f.dropTo[k] {
			f.stats.Blocked++
			f.mu.Unlock()
			return len(p), nil
		}
		if l, ok := f.links[k]; ok {
			link = l
		}
	}
	if link.Loss > 0 && f.rng.Float64() < link.Loss {
		f.stats.Lost++
		f.mu.Unlock()
		return len(p), nil
	}
	copies := 1
	if link.Duplicate > 0 && f.rng.Float64() < link.Duplicate {
		copies = 2
		f.stats.Duplicated++
	}
	if link.Delay == 0 && link.Jitter == 0 {
		f.stats.Sent += uint64(copies)
		f.mu.Unlock()
		for range copies {
			if _, err := f.pc.WriteTo(p, addr); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	now := time.Now()
	for range copies {
		d := link.Delay
		if link.Jitter > 0 {
			d += time.Duration(f.rng.Int64N(int64(2*link.Jitter)+1)) - link.Jitter
		}
		f.seq++
		// The caller (quic-go) reuses p: keep a copy.
		heap.Push(&f.queue, &delayed{due: now.Add(max(d, 0)), seq: f.seq, data: append([]byte(nil), p...), addr: addr})
		f.stats.Delayed++
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return len(p), nil
}

// ReadFrom returns the next packet not blocked by an inbound partition.
// Each loop iteration consumes one packet from the socket, and deadlines
// set on the FaultConn apply to the socket, so the loop is bounded by them.
func (f *FaultConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := f.pc.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		k, keyed := addrKey(addr)
		f.mu.Lock()
		if keyed && f.dropFrom[k] {
			f.stats.Blocked++
			f.mu.Unlock()
			continue
		}
		f.stats.Received++
		f.mu.Unlock()
		return n, addr, nil
	}
}

// schedule is the one goroutine that sends delayed packets when they are due.
func (f *FaultConn) schedule() {
	defer close(f.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []*delayed
	for {
		f.mu.Lock()
		now := time.Now()
		due = due[:0]
		for len(f.queue) > 0 && !f.queue[0].due.After(now) {
			due = append(due, heap.Pop(&f.queue).(*delayed))
		}
		wait := time.Hour
		if len(f.queue) > 0 {
			wait = f.queue[0].due.Sub(now)
		}
		f.stats.Sent += uint64(len(due))
		f.mu.Unlock()
		for i, d := range due {
			// A failed send is what UDP does anyway; the packet is gone.
			_, _ = f.pc.WriteTo(d.data, d.addr)
			due[i] = nil
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-f.wake:
		case <-f.stop:
			return
		}
	}
}

// Close stops the scheduler, drops delayed packets and closes the wrapped
// connection. It is idempotent.
func (f *FaultConn) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.queue = nil
	f.mu.Unlock()
	close(f.stop)
	<-f.done
	return f.pc.Close()
}

// LocalAddr returns the wrapped connection's address.
func (f *FaultConn) LocalAddr() net.Addr { return f.pc.LocalAddr() }

// SetDeadline sets the wrapped connection's deadlines.
func (f *FaultConn) SetDeadline(t time.Time) error { return f.pc.SetDeadline(t) }

// SetReadDeadline sets the wrapped connection's read deadline; quic-go uses
// it to stop its read loop when the transport closes.
func (f *FaultConn) SetReadDeadline(t time.Time) error { return f.pc.SetReadDeadline(t) }

// SetWriteDeadline sets the wrapped connection's write deadline.
func (f *FaultConn) SetWriteDeadline(t time.Time) error { return f.pc.SetWriteDeadline(t) }

// SetReadBuffer sizes the wrapped socket's receive buffer (quic-go asks for
// one on start; without this method it logs a warning).
func (f *FaultConn) SetReadBuffer(bytes int) error {
	if b, ok := f.pc.(interface{ SetReadBuffer(int) error }); ok {
		return b.SetReadBuffer(bytes)
	}
	return errors.New("fault conn: wrapped connection has no receive buffer to size")
}

// SetWriteBuffer sizes the wrapped socket's send buffer.
func (f *FaultConn) SetWriteBuffer(bytes int) error {
	if b, ok := f.pc.(interface{ SetWriteBuffer(int) error }); ok {
		return b.SetWriteBuffer(bytes)
	}
	return errors.New("fault conn: wrapped connection has no send buffer to size")
}

// delayed is a packet waiting in the delay queue.
type delayed struct {
	due  time.Time
	seq  uint64
	data []byte
	addr net.Addr
}

// delayHeap orders delayed packets by due time, then by send order.
type delayHeap []*delayed

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h delayHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)   { *h = append(*h, x.(*delayed)) }
func (h *delayHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}
