package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// A master that once left a request unanswered is marked down while its
// connection stays up (it was only slow: a node just back from a pause,
// or a loaded machine). The other nodes keep redirecting to it. Requests
// must find out that it answers again; before, the mark was cleared only
// by a dial or an answer, and with a live connection nothing dialed it and
// nothing was sent to it, so every request of its groups failed for as
// long as that connection lived (seen in the nemesis suite, issue 12: a
// worker could not open a session or read a lock for minutes after a
// master's SIGSTOP and SIGCONT).
func TestDownMasterWithLiveConnectionIsTriedAgain(t *testing.T) {
	fc := newFakeCluster(t, 3, 1)
	fc.setMaster(0, 2)
	n1, n2, n3 := fc.nodes[0], fc.nodes[1], fc.nodes[2]
	redirect := func(_ *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeLockStatus {
			return &wire.Msg{Code: wire.CodeNotMaster, Hint: 2, HintAddr: n2.addr}
		}
		return nil
	}
	n1.setHandler(redirect)
	n3.setHandler(redirect)
	var reads atomic.Int32
	n2.setHandler(func(_ *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type == wire.TypeLockStatus {
			if reads.Add(1) == 1 {
				return nil // slow once: the client gives up on this answer
			}
			return &wire.Msg{Code: wire.CodeOK}
		}
		return nil
	})
	c := fc.client() // RequestTimeout 2s
	// The first read waits for node 2 in vain, marks it down and goes on
	// to nodes 1 and 3, which redirect to node 2.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.LockStatus(ctx, "r"); err != nil {
		t.Logf("first read (node 2 slow once): %v", err)
	}
	if reads.Load() == 0 {
		t.Fatal("node 2 never got the first read")
	}
	// Node 2 answers again over the same connection: reads must reach it.
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.LockStatus(ctx, "r")
		cancel()
		if err != nil {
			t.Fatalf("read %d after node 2 answers again: %v (node 2 got %d reads; a down mark on a live connection is never cleared)", i+1, err, reads.Load())
		}
	}
}
