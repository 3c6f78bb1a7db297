package quicnet

import (
	"encoding/binary"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// The wrapper must stay a plain PacketConn for quic-go (see FaultConn).
var _ net.PacketConn = (*FaultConn)(nil)

func TestFaultConnStaysOnQUICsPacketPath(t *testing.T) {
	checkNoLeaks(t)
	fc := NewFaultConn(listenUDP(t), FaultConfig{})
	defer fc.Close()
	if _, ok := any(fc).(quic.OOBCapablePacketConn); ok {
		t.Error("FaultConn is an OOBCapablePacketConn: quic-go would bypass ReadFrom and WriteTo")
	}
	if _, ok := any(fc).(interface{ SetReadBuffer(int) error }); !ok {
		t.Error("FaultConn lacks SetReadBuffer: quic-go would warn on every start")
	}
	if err := fc.SetReadBuffer(1 << 20); err != nil {
		t.Errorf("SetReadBuffer: %v", err)
	}

	// A mesh over FaultConns with no faults works, and every packet went
	// through the wrapper.
	m := newMesh(t, 2, true, nil)
	m.nodes[1].Send(2, 0, []byte("hello"))
	waitFor(t, hangGuard, "delivery over FaultConn", func() bool { return m.inbox[2].count() == 1 })
	for id, f := range m.faults {
		if s := f.Stats(); s.Sent == 0 || s.Received == 0 {
			t.Errorf("node %d FaultConn saw no traffic: %+v", id, s)
		}
	}
}

func TestFaultConnDelayQueueKeepsEveryPacketAndStopsOnClose(t *testing.T) {
	checkNoLeaks(t)
	dst := listenUDP(t)
	fc := NewFaultConn(listenUDP(t), FaultConfig{Seed: 1})
	const n, delay, jitter = 500, 20 * time.Millisecond, 10 * time.Millisecond
	if err := fc.SetLink(dst.LocalAddr(), Link{Delay: delay, Jitter: jitter}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range n {
		if _, err := fc.WriteTo(binary.AppendUvarint(nil, uint64(i)), dst.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	seen := make([]bool, n)
	buf := make([]byte, 64)
	dst.SetReadDeadline(time.Now().Add(hangGuard))
	for got := 0; got < n; got++ {
		m, _, err := dst.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d packets: %v", got, n, err)
		}
		if got == 0 && time.Since(start) < delay-jitter {
			t.Errorf("first packet after %v, before the minimum delay %v", time.Since(start), delay-jitter)
		}
		i, _ := binary.Uvarint(buf[:m])
		if i >= n || seen[i] {
			t.Fatalf("packet %d unexpected or twice", i)
		}
		seen[i] = true
	}
	if s := fc.Stats(); s.Delayed != n || s.Sent != n {
		t.Errorf("stats %+v, want %d delayed and sent", s, n)
	}
	// Packets still waiting when Close comes are dropped; Close returns at
	// once and the scheduler goroutine ends (checkNoLeaks).
	fc.SetLink(dst.LocalAddr(), Link{Delay: time.Hour})
	fc.WriteTo([]byte("late"), dst.LocalAddr())
	closeStart := time.Now()
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	// A Close that waited for the delayed packet would take an hour.
	if d := time.Since(closeStart); d > hangGuard {
		t.Errorf("Close took %v with a packet delayed by an hour", d)
	}
}

func TestFaultConnSameSeedMakesSameDecisions(t *testing.T) {
	checkNoLeaks(t)
	dst := listenUDP(t)
	run := func(seed uint64) FaultStats {
		fc := NewFaultConn(listenUDP(t), FaultConfig{Seed: seed})
		defer fc.Close()
		fc.SetLink(nil, Link{Loss: 0.3, Duplicate: 0.3})
		for range 300 {
			fc.WriteTo([]byte("x"), dst.LocalAddr())
		}
		return fc.Stats()
	}
	a, b := run(7), run(7)
	if a.Lost != b.Lost || a.Duplicated != b.Duplicated || a.Lost == 0 || a.Duplicated == 0 {
		t.Errorf("seed 7 twice: %+v and %+v; want equal, non-zero decisions", a, b)
	}
}

func TestFaultConnTotalLossBlocksDeliveryUntilLifted(t *testing.T) {
	checkNoLeaks(t)
	m := newMesh(t, 2, true, nil)
	m.waitConnected(t)
	m.faults[1].SetLink(nil, Link{Loss: 1})
	for i := range 10 {
		m.nodes[1].Send(2, i, seqMsg(i%DefaultLanes, i/DefaultLanes, 8))
	}
	time.Sleep(300 * time.Millisecond)
	if got := m.inbox[2].count(); got != 0 {
		t.Fatalf("%d messages crossed a link losing every packet", got)
	}
	if m.faults[1].Stats().Lost == 0 {
		t.Fatal("no packet was dropped: the loss never applied")
	}
	m.faults[1].SetLink(nil, Link{})
	waitFor(t, hangGuard, "QUIC to retransmit after the loss ended", func() bool { return m.inbox[2].count() == 10 })
}

func TestFaultConnPartitionIsOneWayAndHeals(t *testing.T) {
	checkNoLeaks(t)
	m := newMesh(t, 2, true, nil)
	m.waitConnected(t)
	n1, n2 := m.nodes[1], m.nodes[2]
	m.faults[1].Partition(n2.Addr(), Outbound)
	n1.Send(2, 0, []byte("from 1"))
	n2.Send(1, 0, []byte("from 2"))
	// Node 2's packets still reach node 1: the partition is one-way.
	waitFor(t, hangGuard, "node 1 to hear node 2 across a one-way partition", func() bool { return m.inbox[1].count() == 1 })
	time.Sleep(200 * time.Millisecond)
	if got := m.inbox[2].count(); got != 0 {
		t.Fatalf("node 2 got %d messages across the partition", got)
	}
	m.faults[1].Heal()
	waitFor(t, hangGuard, "node 2 to hear node 1 after the partition healed", func() bool { return m.inbox[2].count() == 1 })

	m.faults[2].Partition(n1.Addr(), Inbound)
	n1.Send(2, 0, []byte("again"))
	time.Sleep(200 * time.Millisecond)
	if got := m.inbox[2].count(); got != 1 {
		t.Fatalf("node 2 got a message across an inbound partition")
	}
	m.faults[2].Heal()
	waitFor(t, hangGuard, "delivery after the inbound partition healed", func() bool { return m.inbox[2].count() == 2 })
}

func TestFaultConnDelayShowsInRoundTrip(t *testing.T) {
	checkNoLeaks(t)
	var echo atomic.Pointer[Node]
	pong := make(chan struct{}, 1)
	m := newMesh(t, 2, true, func(c *Config) {
		if c.ID == 2 {
			c.Handler = func(from NodeID, msg []byte) { echo.Load().Send(from, 0, msg) }
		} else {
			c.Handler = func(NodeID, []byte) { pong <- struct{}{} }
		}
	})
	echo.Store(m.nodes[2])
	m.waitConnected(t)
	rtt := func() time.Duration {
		var all []time.Duration
		for range 7 {
			start := time.Now()
			m.nodes[1].Send(2, 0, []byte("ping"))
			select {
			case <-pong:
			case <-time.After(hangGuard):
				t.Fatalf("no pong within %v", hangGuard)
			}
			all = append(all, time.Since(start))
		}
		slices.Sort(all)
		return all[len(all)/2]
	}
	base := rtt()
	const delay = 50 * time.Millisecond
	m.faults[1].SetLink(m.nodes[2].Addr(), Link{Delay: delay})
	delayed := rtt()
	t.Logf("median round trip %v without delay, %v with %v one-way delay", base, delayed, delay)
	if base >= delay || delayed < delay || delayed > base+delay+100*time.Millisecond {
		t.Errorf("round trip %v with %v delay (base %v): the delay does not show as expected", delayed, delay, base)
	}
}

func TestFaultConnDuplicationAndReorderingKeepStreamsIntact(t *testing.T) {
	checkNoLeaks(t)
	const perLane = 200
	m := newMesh(t, 2, true, nil)
	for _, f := range m.faults {
		f.SetLink(nil, Link{Duplicate: 0.5, Delay: time.Millisecond, Jitter: time.Millisecond})
	}
	for seq := range perLane {
		for lane := range DefaultLanes {
			m.nodes[1].Send(2, lane, seqMsg(lane, seq, 100))
			m.nodes[2].Send(1, lane, seqMsg(lane, seq, 100))
		}
	}
	waitFor(t, hangGuard, "every message once", func() bool {
		return m.inbox[1].count() >= perLane*DefaultLanes && m.inbox[2].count() >= perLane*DefaultLanes
	})
	checkLaneOrder(t, 2, 1, m.inbox[2].from(1), DefaultLanes, perLane)
	checkLaneOrder(t, 1, 2, m.inbox[1].from(2), DefaultLanes, perLane)
	if m.faults[1].Stats().Duplicated == 0 {
		t.Error("no packet was duplicated: the test proves nothing")
	}
}
