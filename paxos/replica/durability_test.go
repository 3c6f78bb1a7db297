package replica

import (
	"context"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// The tests in this file hold the real runtime (Run, its loop and its
// persister) to paxos rule 4: no Promise, Accepted or Nack, and no Prepare
// of the node's own new ballot, leaves the replica before the state it
// vouches for is durable, that is before a synced Save that wrote it has
// returned. They run node 1 of three on a gatedStore, whose Save blocks
// until the test releases it, and a recTransport, which records every
// message and checks at each Send that every reply vouches only for durable
// state; they drive it with real paxos messages through Deliver.
//
// They catch the planted fault of issue 8: a Transport.Send of the remote
// AfterSync messages moved before Store.Save in persistLoop (the replies
// then leave while Save is blocked). They also catch AfterSync sent with the
// Ready's immediate Messages in handleReady, and a synced write made with
// SaveUnsynced. No timing is asserted: the tests wait on channels, with
// hangGuard only against a hang.

// TestAcceptorRepliesLeaveOnlyAfterSave: a Promise, an Accepted, and a Nack
// that carries a promise still being written each wait for the Save that
// makes their state durable, and that Save holds what they vouch for.
func TestAcceptorRepliesLeaveOnlyAfterSave(t *testing.T) {
	for _, v := range gatedVariants {
		t.Run(v.name, func(t *testing.T) { testAcceptorReplies(t, v) })
	}
}

func testAcceptorReplies(t *testing.T, v gatedVariant) {
	gr := startGated(t, 1, v)
	b := paxos.Ballot{Round: 2, Node: 2}

	// Phase 1: the Promise for b waits for the write of the promise.
	gr.deliver(t, paxos.Message{Type: paxos.MsgPrepare, From: 2, Ballot: b})
	save := gr.nextSave(t)
	if h := save.hard(0); h == nil || h.Promised != b {
		t.Fatalf("the Save after Prepare %v writes %+v, want the promise %v", b, save.writes, b)
	}
	gr.settle(t)
	gr.tr.checkNone(t, "a Promise vouches for a promise whose Save is blocked", vouching(1))

	// Pipelined: a lower Prepare, stepped while that Save is blocked, is
	// refused with a Nack that carries the promise not yet durable. Its
	// Ready writes nothing and waits behind the blocked one.
	gr.deliver(t, paxos.Message{Type: paxos.MsgPrepare, From: 3, Ballot: paxos.Ballot{Round: 1, Node: 3}})
	if n := len(gr.persist); n == 0 {
		t.Fatalf("the Nack's Ready is not queued behind the blocked Save")
	}
	gr.tr.checkNone(t, "a Nack carries a promise whose Save is blocked", vouching(1))

	save.release()
	p := gr.tr.waitFor(t, "the Promise", msg(paxos.MsgPromise, 0, 1, 2, b))
	if p.savesBefore < save.n {
		t.Fatalf("the Promise left after %d returned Saves, want the Save #%d that wrote the promise", p.savesBefore, save.n)
	}
	nack := gr.tr.waitFor(t, "the Nack", msg(paxos.MsgNack, 0, 1, 3, b))
	if nack.savesBefore < save.n {
		t.Fatalf("the Nack left after %d returned Saves, want the Save #%d that wrote the promise it carries", nack.savesBefore, save.n)
	}

	// Phase 2: the Accepted for slot 0 waits for the write of the entry.
	val := paxos.Value{ID: paxos.ValueID{Ballot: b, N: 1}, Cmds: []paxos.Command{{ID: paxos.CommandID{Client: 5, Seq: 1}, Data: []byte("v")}}}
	gr.deliver(t, paxos.Message{Type: paxos.MsgAccept, From: 2, Ballot: b, Entries: []paxos.Entry{{Slot: 0, Value: val}}})
	save = gr.nextSave(t)
	if e, ok := save.entry(0, 0); !ok || e.Ballot != b || e.Value.ID != val.ID {
		t.Fatalf("the Save after Accept writes %+v, want slot 0 at %v with value %v", save.writes, b, val.ID)
	}
	gr.settle(t)
	gr.tr.checkNone(t, "an Accepted vouches for an entry whose Save is blocked", msg(paxos.MsgAccepted, 0, 1, 0, paxos.Ballot{}))
	save.release()
	acc := gr.tr.waitFor(t, "the Accepted", msg(paxos.MsgAccepted, 0, 1, 2, b))
	if acc.Slot != 0 || acc.savesBefore < save.n {
		t.Fatalf("Accepted %v left after %d returned Saves, want slot 0 after Save #%d", &acc.Message, acc.savesBefore, save.n)
	}

	// A higher Prepare: its Promise reports the accepted entry and vouches
	// for the new promise, which is being written.
	b3 := paxos.Ballot{Round: 3, Node: 3}
	gr.deliver(t, paxos.Message{Type: paxos.MsgPrepare, From: 3, Ballot: b3})
	save = gr.nextSave(t)
	if h := save.hard(0); h == nil || h.Promised != b3 {
		t.Fatalf("the Save after Prepare %v writes %+v, want the promise %v", b3, save.writes, b3)
	}
	gr.settle(t)
	gr.tr.checkNone(t, "a Promise vouches for a promise whose Save is blocked", msg(paxos.MsgPromise, 0, 1, 3, b3))
	save.release()
	p = gr.tr.waitFor(t, "the Promise", msg(paxos.MsgPromise, 0, 1, 3, b3))
	if len(p.Entries) != 1 || p.Entries[0].Slot != 0 || p.Entries[0].Ballot != b || p.Entries[0].Value.ID != val.ID {
		t.Fatalf("Promise %v reports %+v, want slot 0 accepted at %v", &p.Message, p.Entries, b)
	}
	if p.savesBefore < save.n {
		t.Fatalf("the Promise left after %d returned Saves, want Save #%d", p.savesBefore, save.n)
	}
}

// TestOwnBallotAndVoteCountOnlyWhenDurable: the node's Prepare leaves only
// once its ballot is durable, and as master it counts its own accept only
// once that is durable: with a peer's Accepted in and its own write blocked,
// the slot is not chosen and the proposal does not return.
func TestOwnBallotAndVoteCountOnlyWhenDurable(t *testing.T) {
	for _, v := range gatedVariants {
		t.Run(v.name, func(t *testing.T) { testOwnBallot(t, v) })
	}
}

func testOwnBallot(t *testing.T, v gatedVariant) {
	gr := startGated(t, 1, v)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := gr.Campaign(ctx, 0); err != nil {
		t.Fatal(err)
	}
	save := gr.nextSave(t)
	h := save.hard(0)
	if h == nil || h.Promised.Node != 1 || h.Promised.IsZero() {
		t.Fatalf("the Save after Campaign writes %+v, want this node's own ballot as its promise", save.writes)
	}
	own := h.Promised
	gr.settle(t)
	gr.tr.checkNone(t, "a Prepare uses a ballot whose Save is blocked", vouching(1))
	save.release()
	for _, to := range []paxos.NodeID{2, 3} {
		m := gr.tr.waitFor(t, "the Prepare", msg(paxos.MsgPrepare, 0, 1, to, own))
		if m.savesBefore < save.n {
			t.Fatalf("Prepare %v left after %d returned Saves, want Save #%d", &m.Message, m.savesBefore, save.n)
		}
	}

	// Node 2 promises; with its own promise (stepped after the write) the
	// node is master.
	gr.deliver(t, paxos.Message{Type: paxos.MsgPromise, From: 2, Ballot: own})
	waitStatus(t, gr, 0, "master", func(st paxos.GroupStatus) bool { return st.Role == "master" && st.Ballot == own })

	type result struct {
		res Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := gr.Propose(ctx, 0, paxos.Command{ID: paxos.CommandID{Client: 8, Seq: 1}, Ack: 1, Data: []byte("x")})
		done <- result{res, err}
	}()
	save = gr.nextSave(t)
	if len(save.writes) != 1 || len(save.writes[0].Entries) != 1 {
		t.Fatalf("the Save after Propose writes %+v, want the master's own accept of one slot", save.writes)
	}
	e := save.writes[0].Entries[0]
	if e.Ballot != own {
		t.Fatalf("the master's own accept is at %v, want %v", e.Ballot, own)
	}
	// A peer's vote arrives while the master's own is still being written:
	// one durable vote of three is no majority.
	gr.deliver(t, paxos.Message{Type: paxos.MsgAccepted, From: 2, Ballot: own, Slot: e.Slot})
	if st := gr.status(t, 0); st.Commit > e.Slot {
		t.Fatalf("slot %d counted as chosen (commit %d) with the master's own accept not durable", e.Slot, st.Commit)
	}
	gr.tr.checkNone(t, "a message announces the slot chosen before the master's own accept is durable",
		func(m *paxos.Message) bool { return m.From == 1 && m.Commit > e.Slot })
	select {
	case r := <-done:
		t.Fatalf("Propose returned %+v, %v before the master's own accept was durable", r.res, r.err)
	default:
	}
	save.release()
	select {
	case r := <-done:
		if r.err != nil || r.res.Slot != e.Slot {
			t.Fatalf("Propose: %+v, %v; want slot %d", r.res, r.err, e.Slot)
		}
	case <-time.After(hangGuard):
		t.Fatalf("Propose did not return within %v after the write", hangGuard)
	}
}

// TestQueuedReadysShareOneSaveAndReplyAfterIt covers the pipelined path and
// group commit: while one Save is blocked, accepts and prepares for three
// groups queue up as Readys of their own; once it returns they are written
// by one Save, and none of their replies leaves before that Save returns.
func TestQueuedReadysShareOneSaveAndReplyAfterIt(t *testing.T) {
	for _, v := range gatedVariants {
		t.Run(v.name, func(t *testing.T) { testQueuedReadys(t, v) })
	}
}

func testQueuedReadys(t *testing.T, v gatedVariant) {
	gr := startGated(t, 3, v)
	b2, b3 := paxos.Ballot{Round: 1, Node: 2}, paxos.Ballot{Round: 1, Node: 3}
	val := func(b paxos.Ballot, n uint64) paxos.Value {
		return paxos.Value{ID: paxos.ValueID{Ballot: b, N: n}, Cmds: []paxos.Command{{ID: paxos.CommandID{Client: 6, Seq: n}, Data: []byte("q")}}}
	}

	gr.deliver(t, paxos.Message{Type: paxos.MsgPrepare, Group: 0, From: 2, Ballot: b2})
	first := gr.nextSave(t)

	// While the first Save is blocked: an accept in group 0, a promise and
	// an accept in group 1, an accept without a prepare in group 2, and a
	// refused prepare in group 0. Each is its own Ready.
	gr.deliver(t, paxos.Message{Type: paxos.MsgAccept, Group: 0, From: 2, Ballot: b2, Entries: []paxos.Entry{{Slot: 0, Value: val(b2, 1)}}})
	gr.deliver(t, paxos.Message{Type: paxos.MsgPrepare, Group: 1, From: 3, Ballot: b3})
	gr.deliver(t, paxos.Message{Type: paxos.MsgAccept, Group: 1, From: 3, Ballot: b3, Entries: []paxos.Entry{{Slot: 0, Value: val(b3, 1)}}})
	gr.deliver(t, paxos.Message{Type: paxos.MsgAccept, Group: 2, From: 2, Ballot: b2, Entries: []paxos.Entry{{Slot: 0, Value: val(b2, 2)}}})
	gr.deliver(t, paxos.Message{Type: paxos.MsgPrepare, Group: 0, From: 3, Ballot: paxos.Ballot{Round: 0, Node: 3}})
	if n := len(gr.persist); n < 2 {
		t.Fatalf("%d Readys queued behind the blocked Save, want several", n)
	}
	gr.tr.checkNone(t, "a reply vouches for state whose Save is blocked or not begun", vouching(1))

	first.release()
	gr.tr.waitFor(t, "the Promise of group 0", msg(paxos.MsgPromise, 0, 1, 2, b2))
	second := gr.nextSave(t)
	// The queued Readys are written together.
	if h := second.hard(1); h == nil || h.Promised != b3 {
		t.Fatalf("the second Save writes %+v, want group 1's promise %v", second.writes, b3)
	}
	for _, want := range []struct {
		g paxos.GroupID
		b paxos.Ballot
		v paxos.Value
	}{{0, b2, val(b2, 1)}, {1, b3, val(b3, 1)}, {2, b2, val(b2, 2)}} {
		if e, ok := second.entry(want.g, 0); !ok || e.Ballot != want.b || e.Value.ID != want.v.ID {
			t.Fatalf("the second Save writes %+v, want group %d slot 0 at %v", second.writes, want.g, want.b)
		}
	}
	gr.settle(t)
	for _, g := range []paxos.GroupID{0, 1, 2} {
		gr.tr.checkNone(t, "an Accepted vouches for an entry whose Save is blocked", msg(paxos.MsgAccepted, g, 1, 0, paxos.Ballot{}))
	}
	gr.tr.checkNone(t, "a Promise vouches for a promise whose Save is blocked", msg(paxos.MsgPromise, 1, 1, 0, paxos.Ballot{}))
	// The Nack vouches only for group 0's promise, durable since the first
	// Save; it may leave before the second Save or after it.

	second.release()
	for _, w := range []struct {
		typ paxos.MsgType
		g   paxos.GroupID
		to  paxos.NodeID
		b   paxos.Ballot
	}{
		{paxos.MsgAccepted, 0, 2, b2}, {paxos.MsgPromise, 1, 3, b3}, {paxos.MsgAccepted, 1, 3, b3},
		{paxos.MsgAccepted, 2, 2, b2}, {paxos.MsgNack, 0, 3, b2},
	} {
		m := gr.tr.waitFor(t, w.typ.String(), msg(w.typ, w.g, 1, w.to, w.b))
		if m.Type != paxos.MsgNack && m.savesBefore < second.n {
			t.Fatalf("%v left after %d returned Saves, want Save #%d", &m.Message, m.savesBefore, second.n)
		}
	}
}

// waitStatus waits until group g's status satisfies ok.
func waitStatus(t *testing.T, gr *gatedReplica, g paxos.GroupID, what string, ok func(paxos.GroupStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		st := gr.status(t, g)
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d is not %s within %v: %+v", g, what, hangGuard, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUrgentWriteSkipsGroupCommitWait: a synced write waits for the groups
// that wrote recently (the group-commit wait), unless it holds an urgent
// accept (paxos.Ready.Urgent: a light identity's command), which is written
// at once, and which also ends a wait already under way. The wait and the
// window are an hour here, so that a write that waits is never written
// within the test, however slow the machine.
func TestUrgentWriteSkipsGroupCommitWait(t *testing.T) {
	waiting := make(chan struct{}, 16)
	gr := startGated(t, 2, gatedVariant{wait: time.Hour, recent: time.Hour, waiting: func() { waiting <- struct{}{} }})
	// Group 1 writes first: nothing was recent, so nothing waits.
	gr.accept(t, 1, 0, plain)
	gr.expectSave(t, "group 1's first accept", slotKey{1, 0})
	// Group 0's urgent accept does not wait for group 1, recent now.
	gr.accept(t, 0, 0, urgent)
	gr.expectSave(t, "group 0's urgent accept", slotKey{0, 0})
	gr.tr.waitFor(t, "group 0's Accepted", msg(paxos.MsgAccepted, 0, 1, 2, markBallot))
	// A plain accept of group 0 waits for group 1, and shares its Save.
	gr.accept(t, 0, 1, plain)
	signalled(t, waiting, "a group-commit wait for group 0's plain accept")
	gr.accept(t, 1, 1, plain)
	gr.expectSave(t, "group 0's plain accept, then group 1's", slotKey{0, 1}, slotKey{1, 1})
	// A plain accept waiting for group 1 goes as soon as an urgent one
	// joins it.
	gr.accept(t, 0, 2, plain)
	signalled(t, waiting, "a group-commit wait for group 0's second plain accept")
	gr.accept(t, 0, 3, urgent)
	gr.expectSave(t, "group 0's plain accept, then its urgent one", slotKey{0, 2}, slotKey{0, 3})
	if len(waiting) != 0 {
		t.Fatalf("%d more group-commit waits began than the two plain accepts", len(waiting))
	}
}

// TestContendedWriteMakesOthersYield: after a contended accept
// (paxos.Ready.Contended), a synced write that is not urgent waits for the
// yield gap (Config.YieldGap) and gathers the writes that come meanwhile;
// an urgent accept ends the wait and shares its Save. An urgent accept
// that is not contended starts no yielding. The gap and the window are an
// hour, so nothing here depends on timing.
func TestContendedWriteMakesOthersYield(t *testing.T) {
	yielding := make(chan struct{}, 16)
	gr := startGated(t, 2, gatedVariant{yieldGap: time.Hour, yieldFor: time.Hour, yielding: func() { yielding <- struct{}{} }})
	gr.accept(t, 0, 0, urgent)
	gr.expectSave(t, "group 0's urgent accept", slotKey{0, 0})
	gr.accept(t, 1, 0, plain)
	gr.expectSave(t, "group 1's plain accept after an urgent one that is not contended", slotKey{1, 0})
	if len(yielding) != 0 {
		t.Fatal("the persister yielded though no contended accept came in")
	}
	gr.accept(t, 0, 1, contended)
	gr.expectSave(t, "group 0's contended accept", slotKey{0, 1})
	gr.accept(t, 1, 1, plain)
	signalled(t, yielding, "a yield for a plain accept after a contended one")
	gr.accept(t, 1, 2, plain)
	gr.accept(t, 0, 2, urgent)
	gr.expectSave(t, "the held plain accepts, with the urgent one that ended the wait", slotKey{0, 2}, slotKey{1, 1}, slotKey{1, 2})
	if len(yielding) != 0 {
		t.Fatalf("%d more yields began than the one plain accept", len(yielding))
	}
}

// TestYieldOnlyWithinWindowAndGap: a plain write after a contended one is
// held only while both hold: the contended write is recent (Replica.yieldFor)
// and the gap since the last synced write has not passed (Config.YieldGap).
// Each case sets one of them to a microsecond, which the steps between two
// writes always take longer than, however busy the machine; with either
// check left out, the persister yields (and, for the window, waits an hour).
func TestYieldOnlyWithinWindowAndGap(t *testing.T) {
	for _, v := range []gatedVariant{
		{name: "window passed", yieldGap: time.Hour, yieldFor: time.Microsecond},
		{name: "gap passed", yieldGap: time.Microsecond, yieldFor: time.Hour},
	} {
		t.Run(v.name, func(t *testing.T) {
			yielding := make(chan struct{}, 16)
			v.yielding = func() { yielding <- struct{}{} }
			gr := startGated(t, 1, v)
			gr.accept(t, 0, 0, contended)
			gr.expectSave(t, "the contended accept", slotKey{0, 0})
			gr.accept(t, 0, 1, plain)
			gr.expectSave(t, "the plain accept after it", slotKey{0, 1})
			if len(yielding) != 0 {
				t.Fatalf("the persister yielded with the %s", v.name)
			}
		})
	}
}

// TestYieldWaitEndsOnStop: a replica stopped while its persister yields
// (an hour-long gap here) stops at once; the harness's cleanup fails the
// test if Run has not returned within hangGuard.
func TestYieldWaitEndsOnStop(t *testing.T) {
	yielding := make(chan struct{}, 1)
	gr := startGated(t, 1, gatedVariant{yieldGap: time.Hour, yieldFor: time.Hour, yielding: func() { yielding <- struct{}{} }})
	gr.accept(t, 0, 0, contended)
	gr.expectSave(t, "the contended accept", slotKey{0, 0})
	gr.accept(t, 0, 1, plain)
	signalled(t, yielding, "a yield for a plain accept after a contended one")
}
