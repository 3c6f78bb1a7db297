package quicnet

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// checkLaneOrder verifies that the messages from one sender arrived complete
// and in send order per lane.
func checkLaneOrder(t *testing.T, to, from NodeID, msgs [][]byte, lanes, perLane int) {
	t.Helper()
	next := make([]int, lanes)
	for _, m := range msgs {
		lane, seq, err := parseSeqMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		if lane >= lanes || seq != next[lane] {
			t.Fatalf("node %d got lane %d seq %d from node %d, want seq %d: order broken", to, lane, seq, from, next[lane])
		}
		next[lane]++
	}
	for lane, n := range next {
		if n != perLane {
			t.Errorf("node %d got %d of %d messages on lane %d from node %d", to, n, perLane, lane, from)
		}
	}
}

func TestMeshDeliversBothWaysOnAllLanesInOrder(t *testing.T) {
	checkNoLeaks(t)
	const perLane = 300
	m := newMesh(t, 3, false, nil)
	// Send before waiting for connections: early messages wait in the
	// lane queues (the default queue holds them all).
	for from, n := range m.nodes {
		for to := range m.nodes {
			if to == from {
				continue
			}
			for seq := range perLane {
				for lane := range DefaultLanes {
					if err := n.Send(to, lane, seqMsg(lane, seq, 40)); err != nil {
						t.Fatalf("node %d send to %d: %v", from, to, err)
					}
				}
			}
		}
	}
	total := 2 * perLane * DefaultLanes
	waitFor(t, hangGuard, "all messages delivered", func() bool {
		for _, b := range m.inbox {
			if b.count() < total {
				return false
			}
		}
		return true
	})
	for to, b := range m.inbox {
		for from := range m.nodes {
			if from != to {
				checkLaneOrder(t, to, from, b.from(from), DefaultLanes, perLane)
			}
		}
	}
	// One connection per pair: each side saw exactly one.
	for id, n := range m.nodes {
		for _, s := range n.Stats() {
			if s.Connects != 1 || !s.Connected {
				t.Errorf("node %d peer %d: %d connections, connected %v; want exactly one live", id, s.ID, s.Connects, s.Connected)
			}
			if s.Sent != uint64(perLane*DefaultLanes) || s.Received != uint64(perLane*DefaultLanes) {
				t.Errorf("node %d peer %d: sent %d received %d, want %d each", id, s.ID, s.Sent, s.Received, perLane*DefaultLanes)
			}
		}
	}
}

func TestSendToSelfUnknownPeerAndOversizedMessageFail(t *testing.T) {
	checkNoLeaks(t)
	m := newMesh(t, 2, false, func(c *Config) { c.MaxFrame = 1000 })
	n := m.nodes[1]
	if err := n.Send(1, 0, []byte("x")); !errors.Is(err, ErrSendToSelf) {
		t.Errorf("send to self: %v, want ErrSendToSelf", err)
	}
	if err := n.Send(7, 0, []byte("x")); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("send to node 7: %v, want ErrUnknownPeer", err)
	}
	if err := n.Send(2, 0, make([]byte, 1001)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized send: %v, want ErrFrameTooLarge", err)
	}
	if err := n.Send(2, -1, []byte("x")); err == nil {
		t.Error("negative lane accepted")
	}
	// A lane beyond Lanes wraps, so a group number can be passed as is.
	if err := n.Send(2, 1000+DefaultLanes, seqMsg(0, 0, 8)); err != nil {
		t.Errorf("send on lane 1004: %v", err)
	}
	waitFor(t, hangGuard, "wrapped lane delivered", func() bool { return m.inbox[2].count() == 1 })
	closeNode(t, n)
	if err := n.Send(2, 0, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("send after Close: %v, want ErrClosed", err)
	}
}

// deadAddr returns a loopback UDP address where nothing listens.
func deadAddr(t *testing.T) string {
	c := listenUDP(t)
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

func TestSendToDownPeerNeverBlocksAndCountsDrops(t *testing.T) {
	checkNoLeaks(t)
	p := newTestPKI(t)
	addr2 := deadAddr(t)
	const lanes, queueLen, sends = 2, 8, 5000
	n1 := startNode(t, Config{
		ID: 1, ListenAddr: "127.0.0.1:0", Peers: map[NodeID]string{2: addr2},
		TLS: p.nodeTLS(1), Handler: func(NodeID, []byte) {},
		Lanes: lanes, QueueLen: queueLen,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		DialTimeout: 300 * time.Millisecond, Logger: testLogger(t),
	})
	full := 0
	start := time.Now()
	for i := range sends {
		err := n1.Send(2, i, seqMsg(i%lanes, i/lanes, 16))
		switch {
		case errors.Is(err, ErrQueueFull):
			full++
		case err != nil:
			t.Fatalf("send %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d sends to a down peer took %v", sends, elapsed)
	// Each Send is a non-blocking channel operation: microseconds. Ten
	// seconds for 5000 of them only fails if Send waited for the network
	// (a dial timeout each), never because the machine is busy.
	if elapsed > 10*time.Second {
		t.Errorf("%d sends took %v: Send blocks", sends, elapsed)
	}
	if want := sends - lanes*queueLen; full != want {
		t.Errorf("%d sends reported ErrQueueFull, want %d", full, want)
	}
	s := n1.Stats()[0]
	if s.Dropped != uint64(full) || s.Queued != lanes*queueLen || s.Connected {
		t.Errorf("stats %+v: want Dropped %d, Queued %d, not connected", s, full, lanes*queueLen)
	}

	// When the peer comes up, the queued messages are delivered.
	in := newInbox()
	startNode(t, Config{
		ID: 2, ListenAddr: addr2, Peers: map[NodeID]string{1: n1.Addr().String()},
		TLS: p.nodeTLS(2), Handler: in.handle, Logger: testLogger(t),
	})
	waitFor(t, hangGuard, "queued messages delivered", func() bool { return in.count() == lanes*queueLen })
}

// exchange sends one message each way between a and b until both arrive,
// resending (as Paxos would) while connections are being rebuilt.
func exchange(t *testing.T, a, b *Node, ina, inb *inbox) {
	t.Helper()
	wa, wb := ina.count()+1, inb.count()+1
	deadline := time.Now().Add(hangGuard)
	for inb.count() < wb || ina.count() < wa {
		if time.Now().After(deadline) {
			t.Fatalf("no exchange between node %d and node %d within %v: %+v / %+v", a.ID(), b.ID(), hangGuard, a.Stats(), b.Stats())
		}
		if inb.count() < wb {
			a.Send(b.ID(), 0, []byte("ping"))
		}
		if ina.count() < wa {
			b.Send(a.ID(), 0, []byte("pong"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReconnectAfterAcceptingPeerRestartsOnSameAddress(t *testing.T) {
	checkNoLeaks(t)
	p := newTestPKI(t)
	addr1, addr2 := deadAddr(t), deadAddr(t)
	peers := map[NodeID]string{1: addr1, 2: addr2}
	in1, in2 := newInbox(), newInbox()
	cfg := func(id NodeID, addr string, in *inbox) Config {
		return Config{
			ID: id, ListenAddr: addr, Peers: peers, TLS: p.nodeTLS(id), Handler: in.handle,
			ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
			DialTimeout: 500 * time.Millisecond, IdleTimeout: 3 * time.Second, Logger: testLogger(t),
		}
	}
	n1 := startNode(t, cfg(1, addr1, in1))
	n2, err := New(cfg(2, addr2, in2))
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, n1, n2, in1, in2)
	closeNode(t, n2)
	waitFor(t, hangGuard, "node 1 to notice node 2 left", func() bool { return !connected(n1, 2) })

	start := time.Now()
	n2 = startNode(t, cfg(2, addr2, in2))
	exchange(t, n1, n2, in1, in2)
	t.Logf("messages flow again %v after node 2 restarted", time.Since(start))
	if s := n1.Stats()[0]; s.Connects != 2 {
		t.Errorf("node 1 made %d connections to node 2, want 2", s.Connects)
	}
}

func TestRestartedDialerReplacesItsOldConnection(t *testing.T) {
	checkNoLeaks(t)
	p := newTestPKI(t)
	addr1, addr2 := deadAddr(t), deadAddr(t)
	peers := map[NodeID]string{1: addr1, 2: addr2}
	in1, in2 := newInbox(), newInbox()
	// A FaultConn under node 1 lets it vanish without a word: the
	// partition swallows its CONNECTION_CLOSE, as if it had crashed.
	sock, err := net.ListenPacket("udp", addr1)
	if err != nil {
		t.Fatal(err)
	}
	fc := NewFaultConn(sock, FaultConfig{Seed: 1})
	cfg := func(id NodeID, addr string, pc net.PacketConn, in *inbox) Config {
		return Config{
			ID: id, ListenAddr: addr, PacketConn: pc, Peers: peers, TLS: p.nodeTLS(id), Handler: in.handle,
			ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
			IdleTimeout: 10 * time.Second, Logger: testLogger(t),
		}
	}
	n2 := startNode(t, cfg(2, addr2, nil, in2))
	n1, err := New(cfg(1, addr1, fc, in1))
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, n1, n2, in1, in2)
	fc.Partition(n2.Addr(), Both)
	closeNode(t, n1)
	fc.Close()
	if !connected(n2, 1) {
		t.Fatal("node 2 noticed the crash; the test needs a silent one")
	}

	// Node 2 still holds the old connection (its idle timeout is 10s);
	// the restarted node 1 dials, and the new connection must win.
	n1 = startNode(t, cfg(1, addr1, nil, in1))
	exchange(t, n1, n2, in1, in2)
	if s := n2.Stats()[0]; s.Connects != 2 || !s.Connected {
		t.Errorf("node 2: %+v, want 2 connections, the newer one live", s)
	}
}

func TestCrashedPeerIsDroppedAtOnceByStatelessResetAfterRestart(t *testing.T) {
	checkNoLeaks(t)
	p := newTestPKI(t)
	addr1, addr2 := deadAddr(t), deadAddr(t)
	peers := map[NodeID]string{1: addr1, 2: addr2}
	in1, in2 := newInbox(), newInbox()
	// A long idle timeout, so that a reset connection (about a round trip)
	// and one left to time out (a minute) are far apart even on a busy
	// machine.
	const idle = time.Minute
	// A restarted node keeps its key (and so its stateless reset key).
	tlsOf := map[NodeID]*tls.Config{1: p.nodeTLS(1), 2: p.nodeTLS(2)}
	cfg := func(id NodeID, addr string, pc net.PacketConn, in *inbox) Config {
		return Config{
			ID: id, ListenAddr: addr, PacketConn: pc, Peers: peers, TLS: tlsOf[id], Handler: in.handle,
			ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
			IdleTimeout: idle, Logger: testLogger(t),
		}
	}
	sock, err := net.ListenPacket("udp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	fc := NewFaultConn(sock, FaultConfig{Seed: 2})
	n1 := startNode(t, cfg(1, addr1, nil, in1))
	n2, err := New(cfg(2, addr2, fc, in2))
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, n1, n2, in1, in2)
	// Node 2 "crashes": its CONNECTION_CLOSE never leaves.
	fc.Partition(n1.Addr(), Both)
	closeNode(t, n2)
	fc.Close()

	start := time.Now()
	n2 = startNode(t, cfg(2, addr2, nil, in2))
	// Node 1 still believes in the old connection. Its next packet reaches
	// the new node 2, which answers with a stateless reset made from the
	// same key (derived from the node's private key), so node 1 drops the
	// connection now rather than after the idle timeout, and redials.
	exchange(t, n1, n2, in1, in2)
	took := time.Since(start)
	t.Logf("messages flow again %v after the crashed node 2 restarted (idle timeout %v)", took, idle)
	if took > idle/3 {
		t.Errorf("recovery took %v: the dead connection was not reset", took)
	}
}

// TestAddPeerAtRuntime: node 1 starts without node 2 among its peers (node 2
// joins later, as after a membership change). Node 2 queues a message for
// node 1, which only node 1 can connect (the lower ID dials). Once node 1
// adds node 2, the connection comes up and messages flow both ways; adding
// it again is a no-op, and another address for it, the node itself or a
// closed node are refused.
func TestAddPeerAtRuntime(t *testing.T) {
	checkNoLeaks(t)
	m := newMesh(t, 2, false, func(c *Config) {
		if c.ID == 1 {
			c.Peers = map[NodeID]string{1: c.Peers[1]}
		}
	})
	n1, n2 := m.nodes[1], m.nodes[2]
	if err := n1.Send(2, 0, seqMsg(0, 0, 8)); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("send to a node not yet added: %v, want ErrUnknownPeer", err)
	}
	if err := n2.Send(1, 0, seqMsg(0, 0, 8)); err != nil {
		t.Fatal(err)
	}
	if err := n1.AddPeer(2, m.addrs[2]); err != nil {
		t.Fatal(err)
	}
	if err := n1.AddPeer(2, m.addrs[2]); err != nil {
		t.Fatalf("adding a known peer again: %v", err)
	}
	if err := n1.AddPeer(2, "127.0.0.1:1"); err == nil {
		t.Fatal("a known peer at another address was taken")
	}
	if err := n1.AddPeer(1, m.addrs[1]); err == nil {
		t.Fatal("the node itself was taken as a peer")
	}
	if err := n1.Send(2, 0, seqMsg(0, 0, 8)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, hangGuard, "messages both ways after AddPeer", func() bool {
		return m.inbox[1].count() == 1 && m.inbox[2].count() == 1
	})
	n1.Close()
	if err := n1.AddPeer(3, "127.0.0.1:1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddPeer after Close: %v, want ErrClosed", err)
	}
}
