package paxos

import "testing"

// Rules the protocol model (paxos/internal/protomodel) pointed at.

// becomeMaster makes node 1 of nodes3 master of group 0: it campaigns, and
// its own promise and node 2's complete a majority.
func becomeMaster(t *testing.T, n *Node, st *MemoryStorage) {
	t.Helper()
	if err := n.Campaign(0); err != nil {
		t.Fatal(err)
	}
	r := drain(t, n, st)
	p, _ := find(r.AfterSync, MsgPrepare, 2)
	own, _ := find(r.AfterSync, MsgPromise, 1)
	step(t, n, own)
	step(t, n, Message{Type: MsgPromise, From: 2, To: 1, Ballot: p.Ballot})
}

// A master that learns, from a FetchReply, slots chosen beyond the ones it
// proposed in puts its new values after them. Before, next stayed below the
// commit index, the window test next-commit wrapped around, and the master
// never proposed again.
func TestStepMasterProposesAfterSlotsLearnedBeyondNext(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMaster(t, n, st)
	drain(t, n, st)
	other := Ballot{Round: 9, Node: 3}
	var es []Entry
	for s := uint64(0); s < 3; s++ {
		es = append(es, Entry{Slot: s, Ballot: other, Value: val(s+1, "theirs"), Chosen: true})
	}
	step(t, n, Message{Type: MsgFetchReply, From: 3, To: 1, Commit: 3, Entries: es})
	drain(t, n, st)
	if s, _ := n.Status(0); s.Role != "master" || s.Commit != 3 {
		t.Fatalf("status %+v, want a master with commit 3 (it proposed nothing, so the commit rule keeps it)", s)
	}
	if err := n.Propose(0, Command{ID: CommandID{Client: 1, Seq: 1}, Data: []byte("mine")}); err != nil {
		t.Fatal(err)
	}
	r := drain(t, n, st)
	acc, ok := find(r.Messages, MsgAccept, 2)
	if !ok || acc.Entries[0].Slot != 3 {
		t.Fatalf("after learning slots 0..2 chosen, a proposal sent %+v, want an Accept for slot 3", r.Messages)
	}
}

// An acceptor that knows a slot chose a value acknowledges an Accept for
// that slot only if it carries that value: otherwise its Accepted would be
// a vote it never recorded, for a value that was not chosen.
func TestStepAcceptForChosenSlotOnlyAcknowledgesChosenValue(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	chosen := val(1, "chosen")
	step(t, n, Message{Type: MsgFetchReply, From: 3, To: 1, Commit: 1,
		Entries: []Entry{{Slot: 0, Ballot: Ballot{Round: 2, Node: 3}, Value: chosen, Chosen: true}}})
	drain(t, n, st)
	stale := Ballot{Round: 3, Node: 2}
	other := val(2, "other")
	step(t, n, Message{Type: MsgAccept, From: 2, To: 1, Ballot: stale, Entries: []Entry{{Slot: 0, Value: other}}})
	r := drain(t, n, st)
	if _, ok := find(r.AfterSync, MsgAccepted, 2); ok {
		t.Fatal("an Accept of another value for a slot known chosen was acknowledged")
	}
	if nack, ok := find(r.AfterSync, MsgNack, 2); !ok || nack.Commit != 1 {
		t.Fatalf("want a Nack carrying commit 1 so that the stale master fetches, got %+v", r.AfterSync)
	}
	if es, _ := st.Entries(0, 0, 1, 1); len(es) != 1 || es[0].Value.ID != chosen.ID {
		t.Fatalf("slot 0 holds %+v, want the chosen value", es)
	}
	step(t, n, Message{Type: MsgAccept, From: 2, To: 1, Ballot: stale, Entries: []Entry{{Slot: 0, Value: chosen}}})
	r = drain(t, n, st)
	if _, ok := find(r.AfterSync, MsgAccepted, 2); !ok {
		t.Fatalf("an Accept of the chosen value itself was not acknowledged: %+v", r.AfterSync)
	}
}
