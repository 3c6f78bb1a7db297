package server

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
)

// incNode is one side of the hello exchange on a real store; frames go
// straight to the other side.
type incNode struct {
	c  *incarnations
	st *pebblestore.Store
}

func newIncNode(t testing.TB, id paxos.NodeID, dir string) *incNode {
	t.Helper()
	st, err := pebblestore.Open(dir, pebblestore.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CheckMeta(pebblestore.Meta{ClusterID: "c", Groups: 1, NodeID: uint32(id)}); err != nil {
		t.Fatal(err)
	}
	c := newIncarnations(id, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.spawn = func(f func()) { f() }
	return &incNode{c: c, st: st}
}

// link connects a and b: a frame sent to the other is handled by it (acks
// and refusals are sent from goroutines, so wait for them with wg).
func link(a, b *incNode, wg *sync.WaitGroup) {
	link := func(from, to *incNode) func(paxos.NodeID, []byte) {
		return func(_ paxos.NodeID, f []byte) {
			wg.Add(1)
			defer wg.Done()
			to.c.onFrame(from.c.self, append([]byte(nil), f...))
		}
	}
	a.c.send, b.c.send = link(a, b), link(b, a)
}

func settle(wg *sync.WaitGroup, c ...*incarnations) {
	for range 3 {
		for _, x := range c {
			x.sayHello([]paxos.NodeID{1, 2})
		}
		wg.Wait()
	}
}

// TestIncarnationsRefuseAWipedNode: two nodes introduce themselves and take
// each other's messages; node 2 comes back on an empty data dir (a new
// incarnation) and node 1, which remembers the old one across its own
// restart, refuses it; node 2 hears why (ErrDamaged). Back with the replace
// flag (--recover-from-peers), node 2 is admitted but not followed as a
// proposer, and it does not vote itself.
func TestIncarnationsRefuseAWipedNode(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	n1, n2 := newIncNode(t, 1, d1), newIncNode(t, 2, d2)
	var wg sync.WaitGroup
	link(n1, n2, &wg)
	settle(&wg, n1.c, n2.c)
	prep := func(from, to paxos.NodeID) *paxos.Message {
		return &paxos.Message{Type: paxos.MsgPrepare, From: from, To: to}
	}
	if !n1.c.allows(prep(2, 1)) || !n2.c.allows(prep(1, 2)) || !n1.c.introduced(2) {
		t.Fatal("introduced nodes do not take each other's messages")
	}
	n1.st.Close()
	n2.st.Close()

	n1 = newIncNode(t, 1, d1) // restarted: remembers node 2's incarnation
	n2 = newIncNode(t, 2, t.TempDir())
	link(n1, n2, &wg)
	if n1.c.allows(prep(2, 1)) || n1.c.introduced(2) {
		t.Fatal("a restarted node takes messages (or snapshot frames) before the peer said hello")
	}
	settle(&wg, n1.c, n2.c)
	if n1.c.allows(prep(2, 1)) || n1.c.introduced(2) {
		t.Fatal("node 1 takes messages (or snapshot frames) from node 2's new incarnation")
	}
	if err := n2.c.err(); !errors.Is(err, ErrRefused) || !errors.Is(err, pebblestore.ErrDamaged) {
		t.Fatalf("node 2 was not told it was refused: %v", err)
	}
	n2.st.Close()

	n2 = newIncNode(t, 2, t.TempDir())
	if err := n2.c.setRecovering(true); err != nil {
		t.Fatal(err)
	}
	link(n1, n2, &wg)
	settle(&wg, n1.c, n2.c)
	if err := n2.c.err(); err != nil {
		t.Fatalf("a replacing node was refused: %v", err)
	}
	fetch := &paxos.Message{Type: paxos.MsgFetch, From: 2, To: 1}
	if !n1.c.allows(fetch) || !n1.c.introduced(2) || n1.c.allows(prep(2, 1)) || n2.c.allows(prep(1, 2)) {
		t.Fatal("a recovering node leads or votes, or cannot fetch")
	}
	if err := n2.c.setRecovering(false); err != nil {
		t.Fatal(err)
	}
	settle(&wg, n1.c, n2.c)
	if !n1.c.allows(prep(2, 1)) || !n2.c.allows(prep(1, 2)) {
		t.Fatal("a recovered node is not a full member again")
	}
	n1.st.Close()
	n2.st.Close()
}

// TestFoundingConfiguration: a node that waits to be told the cluster's
// founding configuration takes the first one a member sends (in its hello
// or its ack), and two nodes that know theirs refuse each other's messages
// when they differ: they would replay their logs from other voters and
// count quorums that do not intersect.
func TestFoundingConfiguration(t *testing.T) {
	prep := func(from, to paxos.NodeID) *paxos.Message {
		return &paxos.Message{Type: paxos.MsgPrepare, From: from, To: to}
	}
	var wg sync.WaitGroup

	// A pending node is told by a member, by hello and by ack.
	n1, n2 := newIncNode(t, 1, t.TempDir()), newIncNode(t, 2, t.TempDir())
	n1.c.setFounding([]paxos.NodeID{1, 3, 4})
	link(n1, n2, &wg)
	select {
	case <-n2.c.toldc:
		t.Fatal("told before any frame")
	default:
	}
	n1.c.sayHello([]paxos.NodeID{2})
	wg.Wait()
	<-n2.c.toldc
	if got, by := n2.c.toldFounding(); !slices.Equal(got, []paxos.NodeID{1, 3, 4}) || by != 1 {
		t.Fatalf("told %v by %d, want [1 3 4] by 1", got, by)
	}
	n3 := newIncNode(t, 3, t.TempDir())
	link(n1, n3, &wg)
	n3.c.sayHello([]paxos.NodeID{1}) // n1 acks with its founding
	wg.Wait()
	if got, _ := n3.c.toldFounding(); !slices.Equal(got, []paxos.NodeID{1, 3, 4}) {
		t.Fatalf("told %v by an ack, want [1 3 4]", got)
	}

	// Two nodes that know differing founding configurations.
	a, b := newIncNode(t, 1, t.TempDir()), newIncNode(t, 2, t.TempDir())
	a.c.setFounding([]paxos.NodeID{1, 2, 3})
	b.c.setFounding([]paxos.NodeID{1, 2, 4})
	link(a, b, &wg)
	settle(&wg, a.c, b.c)
	if a.c.allows(prep(2, 1)) || b.c.allows(prep(1, 2)) || a.c.introduced(2) || b.c.introduced(1) {
		t.Fatal("nodes with different founding configurations take each other's messages")
	}
	b.c.setFounding([]paxos.NodeID{1, 2, 3})
	settle(&wg, a.c, b.c)
	if !a.c.allows(prep(2, 1)) || !b.c.allows(prep(1, 2)) {
		t.Fatal("nodes with the same founding configuration do not take each other's messages")
	}
	for _, n := range []*incNode{n1, n2, n3, a, b} {
		n.st.Close()
	}
}

// FuzzHelloFrame: any hello, ack or refuse frame from a peer is decoded
// without panicking, and a founding configuration is taken only well
// formed (ascending node ids, none zero, at most maxFoundingNodes).
func FuzzHelloFrame(f *testing.F) {
	ids := []paxos.NodeID{1, 2, 3}
	f.Add(appendHello(7, false, ids))
	f.Add(appendHello(7, true, nil))
	ack := binary.AppendUvarint([]byte{helloMarker, ackKind}, 7)
	ack = binary.AppendUvarint(ack, 9)
	ack = binary.AppendUvarint(ack, 1)
	ack = append(ack, 3, 2, 40)
	f.Add(appendFounding(ack, ids))
	f.Add(append(appendHello(7, false, nil)[:4], 3, 2, 1, 3))             // not ascending
	f.Add(append(appendHello(7, false, nil)[:4], 0xff, 0xff, 0xff, 0x0f)) // a huge count
	f.Add([]byte{helloMarker, refuseKind, 1, 2, 3})
	n := newIncNode(f, 1, f.TempDir())
	defer n.st.Close()
	n.c.send = func(paxos.NodeID, []byte) {}
	f.Fuzz(func(t *testing.T, b []byte) {
		n.c.mu.Lock()
		n.c.told, n.c.toldc = nil, make(chan struct{}) // each input is told afresh
		n.c.mu.Unlock()
		n.c.onFrame(2, b)
		told, _ := n.c.toldFounding()
		if len(told) > maxFoundingNodes {
			t.Fatalf("took a founding configuration of %d nodes", len(told))
		}
		for i, id := range told {
			if id == 0 || (i > 0 && id <= told[i-1]) {
				t.Fatalf("took a malformed founding configuration %v", told)
			}
		}
	})
}
