package client

import (
	"context"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

type watchReq struct {
	fs *fakeStream
	m  wire.Msg
}

func nextEvent[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the channel closed")
		}
		return ev
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("no event within a minute")
	}
	panic("unreachable")
}

func TestWatchSyncsStreamsAndResyncsAfterReconnect(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	subs := make(chan watchReq, 8)
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		switch m.Type {
		case wire.TypeLockStatus:
			return &wire.Msg{Code: wire.CodeOK, Flags: wire.FlagHeld, Holders: []wire.HolderItem{{Session: 5, Token: 3}}}
		case wire.TypeWatch:
			subs <- watchReq{fs, *m}
			return &wire.Msg{Code: wire.CodeOK}
		case wire.TypeUnwatch:
			return &wire.Msg{Code: wire.CodeOK}
		}
		return nil
	})
	c := fc.client()
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	ch1, err := c.Watch(ctx1, "w")
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch1); ev.Kind != EventSync || len(ev.Holders) != 1 || ev.Holders[0].Token != 3 {
		t.Fatalf("first event %+v, want a sync with token 3", ev)
	}
	w := nextEvent(t, (<-chan watchReq)(subs))
	push := func(w watchReq, kind wire.EventKind, session, token uint64) {
		w.fs.send(&wire.Msg{Type: wire.TypeEvent, ReqID: w.m.ReqID, Kind: kind, Name: "w", Session: session, Token: token})
	}
	push(w, wire.EventReleased, 5, 3)
	push(w, wire.EventGranted, 6, 4)
	if ev := nextEvent(t, ch1); ev.Kind != EventReleased || ev.Token != 3 {
		t.Fatalf("got %+v, want the release of token 3", ev)
	}
	if ev := nextEvent(t, ch1); ev.Kind != EventGranted || ev.Token != 4 || ev.Session != 6 {
		t.Fatalf("got %+v, want the grant of token 4", ev)
	}

	// A second watcher of the same name shares the subscription.
	ctx2, cancel2 := context.WithCancel(context.Background())
	ch2, err := c.Watch(ctx2, "w")
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch2); ev.Kind != EventSync {
		t.Fatalf("second watcher's first event %+v, want a sync", ev)
	}
	push(w, wire.EventExpired, 6, 4)
	for _, ch := range []<-chan LockEvent{ch1, ch2} {
		if ev := nextEvent(t, ch); ev.Kind != EventExpired || ev.Token != 4 {
			t.Fatalf("got %+v, want the expiry of token 4", ev)
		}
	}
	if got := len(n.requests(wire.TypeWatch)); got != 1 {
		t.Fatalf("%d Watch requests for two watchers of one name, want 1", got)
	}

	// After a reconnect: subscribe again and sync, since the gap is lost.
	n.closeConns()
	nextEvent(t, (<-chan watchReq)(subs))
	for _, ch := range []<-chan LockEvent{ch1, ch2} {
		if ev := nextEvent(t, ch); ev.Kind != EventSync {
			t.Fatalf("after a reconnect got %+v, want a sync", ev)
		}
	}
	cancel2()
	for range ch2 {
	}
	cancel1()
	for range ch1 {
	}
	waitFor(t, 5*time.Second, "Unwatch", func() bool { return len(n.requests(wire.TypeUnwatch)) == 1 })
}

func TestWatchMastersResumesFromLastEpoch(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type != wire.TypeWatchMasters {
			return nil
		}
		cur := wire.MasterItem{Group: 0, Epoch: 4, Master: 1, Addr: n.addr}
		next := wire.MasterItem{Group: 0, Epoch: 8, Master: 2, Addr: "127.0.0.1:9"}
		if len(m.Masters) > 0 { // a resume
			cur, next = next, wire.MasterItem{Group: 0, Epoch: 12, Master: 0}
		}
		// The node's replay may repeat what the answer carries.
		fs.send(&wire.Msg{Type: wire.TypeEvent, ReqID: m.ReqID, Kind: wire.EventMaster, Masters: []wire.MasterItem{cur}})
		go func() {
			time.Sleep(20 * time.Millisecond)
			fs.send(&wire.Msg{Type: wire.TypeEvent, ReqID: m.ReqID, Kind: wire.EventMaster, Masters: []wire.MasterItem{next}})
		}()
		return &wire.Msg{Code: wire.CodeOK, Masters: []wire.MasterItem{cur}}
	})
	c := fc.client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := c.WatchMasters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []MasterEvent{{Epoch: 4, Node: 1}, {Epoch: 8, Node: 2}} {
		if ev := nextEvent(t, ch); ev.Epoch != want.Epoch || ev.Node != want.Node {
			t.Fatalf("got %+v, want epoch %d master %d", ev, want.Epoch, want.Node)
		}
	}
	n.closeConns()
	if ev := nextEvent(t, ch); ev.Epoch != 12 || ev.Node != 0 {
		t.Fatalf("after the reconnect got %+v, want epoch 12 with no master (repeats dropped)", ev)
	}
	reqs := n.requests(wire.TypeWatchMasters)
	if len(reqs) != 2 || len(reqs[1].Masters) != 1 || reqs[1].Masters[0].Epoch != 8 {
		t.Fatalf("resubscription %+v: want it to resume after epoch 8", reqs)
	}
	cancel()
	for range ch {
	}
}
