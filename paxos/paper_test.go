package paxos

import (
	"errors"
	"testing"
)

// These tests check, one by one, the acceptor and proposer rules written in
// the package documentation (field report F7), by stepping one node by hand.

var nodes3 = []NodeID{1, 2, 3}

func newTestNode(t *testing.T, id NodeID, mod func(*Config)) (*Node, *MemoryStorage) {
	t.Helper()
	st := NewMemoryStorage()
	cfg := Config{ID: id, Nodes: nodes3, Groups: 1, Rand: func(int) int { return 0 }}
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	return n, st
}

// drain runs Ready/persist/Advance and returns the Readys as one (Urgent if
// any of them was).
func drain(t *testing.T, n *Node, st *MemoryStorage) Ready {
	t.Helper()
	var all Ready
	for i := 0; i < 10 && n.HasReady(); i++ {
		r := n.Ready()
		if err := st.Save(r.Persist); err != nil {
			t.Fatal(err)
		}
		n.Advance(r)
		all.Messages = append(all.Messages, r.Messages...)
		all.Persist = append(all.Persist, r.Persist...)
		all.AfterSync = append(all.AfterSync, r.AfterSync...)
		all.Committed = append(all.Committed, r.Committed...)
		all.Dropped = append(all.Dropped, r.Dropped...)
		all.Snapshots = append(all.Snapshots, r.Snapshots...)
		all.Urgent = all.Urgent || r.Urgent
		all.Contended = all.Contended || r.Contended
	}
	return all
}

func find(ms []Message, typ MsgType, to NodeID) (Message, bool) {
	for _, m := range ms {
		if m.Type == typ && m.To == to {
			return m, true
		}
	}
	return Message{}, false
}

func step(t *testing.T, n *Node, m Message) {
	t.Helper()
	if err := n.Step(m); err != nil {
		t.Fatal(err)
	}
}

func val(n uint64, data string) Value {
	return Value{ID: ValueID{Ballot: Ballot{Round: 100, Node: 9}, N: n}, Cmds: []Command{{ID: CommandID{Client: 1, Seq: n}, Data: []byte(data)}}}
}

func TestRule1PromiseOnlyGrows(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	high, low := Ballot{Round: 5, Node: 2}, Ballot{Round: 4, Node: 3}
	step(t, n, Message{Type: MsgPrepare, From: 2, To: 1, Ballot: high})
	r := drain(t, n, st)
	if _, ok := find(r.AfterSync, MsgPromise, 2); !ok {
		t.Fatalf("no promise for %s: %+v", high, r.AfterSync)
	}
	step(t, n, Message{Type: MsgPrepare, From: 3, To: 1, Ballot: low})
	r = drain(t, n, st)
	nack, ok := find(r.AfterSync, MsgNack, 3)
	if !ok || nack.Ballot != high {
		t.Fatalf("prepare below the promise: want a nack carrying %s, got %+v", high, r.AfterSync)
	}
	if hs, _ := st.HardState(0); hs.Promised != high {
		t.Fatalf("durable promise %s, want %s", hs.Promised, high)
	}
}

func TestRule2AcceptRaisesPromiseAndLowerAcceptIsRefused(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	b5, b3 := Ballot{Round: 5, Node: 2}, Ballot{Round: 3, Node: 3}
	step(t, n, Message{Type: MsgAccept, From: 2, To: 1, Ballot: b5, Entries: []Entry{{Slot: 0, Value: val(1, "a")}}})
	r := drain(t, n, st)
	if _, ok := find(r.AfterSync, MsgAccepted, 2); !ok {
		t.Fatal("accept at a fresh acceptor was not acknowledged")
	}
	if hs, _ := st.HardState(0); hs.Promised != b5 {
		t.Fatalf("accept(%s) left the durable promise at %s", b5, hs.Promised)
	}
	// A prepare and an accept below the raised promise are both refused.
	step(t, n, Message{Type: MsgPrepare, From: 3, To: 1, Ballot: b3})
	step(t, n, Message{Type: MsgAccept, From: 3, To: 1, Ballot: b3, Entries: []Entry{{Slot: 0, Value: val(2, "b")}}})
	r = drain(t, n, st)
	nacks := 0
	for _, m := range r.AfterSync {
		if m.Type == MsgNack && m.Ballot == b5 {
			nacks++
		}
		if m.Type == MsgAccepted || m.Type == MsgPromise {
			t.Fatalf("a lower ballot got %s", m.Type)
		}
	}
	if nacks != 2 {
		t.Fatalf("want 2 nacks carrying %s, got %+v", b5, r.AfterSync)
	}
	es, _ := st.Entries(0, 0, 1, 1)
	if len(es) != 1 || es[0].Value.ID != val(1, "").ID {
		t.Fatalf("slot 0 was overwritten by a lower ballot: %+v", es)
	}
}

func TestRule3PromiseCarriesHighestAcceptedValue(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	b2, b3 := Ballot{Round: 2, Node: 2}, Ballot{Round: 3, Node: 3}
	step(t, n, Message{Type: MsgAccept, From: 2, To: 1, Ballot: b2, Entries: []Entry{{Slot: 4, Value: val(7, "x")}}})
	drain(t, n, st)
	step(t, n, Message{Type: MsgPrepare, From: 3, To: 1, Ballot: b3, Slot: 0})
	r := drain(t, n, st)
	p, ok := find(r.AfterSync, MsgPromise, 3)
	if !ok {
		t.Fatal("no promise")
	}
	if len(p.Entries) != 1 || p.Entries[0].Slot != 4 || p.Entries[0].Ballot != b2 || p.Entries[0].Value.ID != val(7, "").ID {
		t.Fatalf("promise entries %s, want slot 4 accepted under %s", entriesString(p.Entries), b2)
	}
}

func TestRule4RepliesLeaveOnlyAfterSync(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	step(t, n, Message{Type: MsgPrepare, From: 2, To: 1, Ballot: Ballot{Round: 1, Node: 2}})
	step(t, n, Message{Type: MsgAccept, From: 2, To: 1, Ballot: Ballot{Round: 1, Node: 2}, Entries: []Entry{{Slot: 0, Value: val(1, "a")}}})
	step(t, n, Message{Type: MsgPrepare, From: 3, To: 1, Ballot: Ballot{Round: 0, Node: 3}})
	if err := n.Campaign(0); err != nil {
		t.Fatal(err)
	}
	r := drain(t, n, st)
	for _, m := range r.Messages {
		switch m.Type {
		case MsgPromise, MsgAccepted, MsgNack, MsgPrepare:
			t.Fatalf("%s left before the sync: %s", m.Type, m.String())
		}
	}
	for _, want := range []MsgType{MsgPromise, MsgAccepted, MsgNack, MsgPrepare} {
		found := false
		for _, m := range r.AfterSync {
			found = found || m.Type == want
		}
		if !found {
			t.Fatalf("no %s in AfterSync: %+v", want, r.AfterSync)
		}
	}
}

// becomeMasterWith campaigns on node 1 and answers with the given promises.
func becomeMasterWith(t *testing.T, n *Node, st *MemoryStorage, promises ...Message) Ready {
	t.Helper()
	return campaignWith(t, n, st, true, promises...)
}

// campaignWith campaigns on node 1; with own set, its own promise counts.
func campaignWith(t *testing.T, n *Node, st *MemoryStorage, own bool, promises ...Message) Ready {
	t.Helper()
	if err := n.Campaign(0); err != nil {
		t.Fatal(err)
	}
	r := drain(t, n, st)
	prep, ok := find(r.AfterSync, MsgPrepare, 2)
	if !ok {
		t.Fatal("campaign sent no prepare")
	}
	for _, m := range r.AfterSync {
		if m.To == 1 && own {
			step(t, n, m) // our own promise, after its sync
		}
	}
	for _, p := range promises {
		p.Type, p.To, p.Ballot = MsgPromise, 1, prep.Ballot
		step(t, n, p)
	}
	return drain(t, n, st)
}

func TestRule5Phase2TakesHighestBallotValueNoopForGaps(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	low, high := val(1, "low"), val(2, "high")
	r := campaignWith(t, n, st, false,
		Message{From: 2, Entries: []Entry{{Slot: 0, Ballot: Ballot{Round: 1, Node: 2}, Value: low}, {Slot: 2, Ballot: Ballot{Round: 1, Node: 2}, Value: low}}},
		Message{From: 3, Entries: []Entry{{Slot: 0, Ballot: Ballot{Round: 2, Node: 3}, Value: high}}},
	)
	got := map[uint64]Value{}
	for _, m := range r.Messages {
		if m.Type == MsgAccept && m.To == 2 {
			got[m.Entries[0].Slot] = m.Entries[0].Value
		}
	}
	if got[0].ID != high.ID {
		t.Errorf("slot 0: proposed %v, want the highest-ballot value %v", got[0].ID, high.ID)
	}
	if v, ok := got[1]; !ok || len(v.Cmds) != 0 {
		t.Errorf("slot 1 (a gap): proposed %+v, want a no-op", v)
	}
	if got[2].ID != low.ID {
		t.Errorf("slot 2: proposed %v, want %v", got[2].ID, low.ID)
	}
}

func TestMultiPaxosRunsPhase1OnceThenOnlyPhase2(t *testing.T) {
	n, st := newTestNode(t, 1, func(c *Config) { c.MaxBatchCommands = 1 })
	becomeMasterWith(t, n, st, Message{From: 2})
	for i := uint64(1); i <= 10; i++ {
		if err := n.Propose(0, Command{ID: CommandID{Client: 1, Seq: i}}); err != nil {
			t.Fatal(err)
		}
	}
	r := drain(t, n, st)
	accepts := 0
	for _, m := range append(r.Messages, r.AfterSync...) {
		if m.Type == MsgPrepare {
			t.Fatalf("master sent a prepare for new commands: %s", m.String())
		}
		if m.Type == MsgAccept && m.To == 2 {
			accepts++
		}
	}
	if accepts != 10 {
		t.Fatalf("want 10 accepts to node 2, got %d", accepts)
	}
}

func TestWindowBoundsSlotsInFlight(t *testing.T) {
	n, st := newTestNode(t, 1, func(c *Config) { c.MaxBatchCommands = 1; c.Window = 2 })
	becomeMasterWith(t, n, st, Message{From: 2})
	for i := uint64(1); i <= 5; i++ {
		if err := n.Propose(0, Command{ID: CommandID{Client: 1, Seq: i}}); err != nil {
			t.Fatal(err)
		}
	}
	r := drain(t, n, st)
	var slots []uint64
	for _, m := range r.Messages {
		if m.Type == MsgAccept && m.To == 2 {
			slots = append(slots, m.Entries[0].Slot)
		}
	}
	if len(slots) != 2 {
		t.Fatalf("window 2: %d slots in flight (%v)", len(slots), slots)
	}
}

// TestF8MasterCountsOnlyItsDurableAccept: on three nodes, one peer's vote plus
// the master's own vote (which only comes back after its sync) choose a slot.
func TestF8MasterCountsOnlyItsDurableAccept(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMasterWith(t, n, st, Message{From: 2})
	if err := n.Propose(0, Command{ID: CommandID{Client: 1, Seq: 1}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	r := n.Ready()
	acc, ok := find(r.Messages, MsgAccept, 2)
	if !ok {
		t.Fatal("no accept sent before the sync")
	}
	own, ok := find(r.AfterSync, MsgAccepted, 1)
	if !ok {
		t.Fatal("the master's own vote is not held back until its sync")
	}
	if err := st.Save(r.Persist); err != nil {
		t.Fatal(err)
	}
	n.Advance(r)
	step(t, n, Message{Type: MsgAccepted, From: 2, To: 1, Ballot: acc.Ballot, Slot: acc.Entries[0].Slot})
	if r := drain(t, n, st); len(r.Committed) != 0 {
		t.Fatal("one peer vote alone chose the slot; the master's own vote was not durable yet")
	}
	step(t, n, own)
	r = drain(t, n, st)
	if len(r.Committed) != 1 || r.Committed[0].Slot != acc.Entries[0].Slot {
		t.Fatalf("own durable vote plus one peer did not choose the slot: %+v", r.Committed)
	}
}

// TestF6OwnCommandsRetriedWhenAnotherValueWins: a slot we proposed chooses
// another value (we learn it from a fetch); our commands go back into a new slot.
func TestF6OwnCommandsRetriedWhenAnotherValueWins(t *testing.T) {
	n, st := newTestNode(t, 1, func(c *Config) { c.Contend = true })
	becomeMasterWith(t, n, st, Message{From: 2})
	mine := Command{ID: CommandID{Client: 5, Seq: 1}, Data: []byte("mine")}
	if err := n.Propose(0, mine); err != nil {
		t.Fatal(err)
	}
	r := drain(t, n, st)
	acc, _ := find(r.Messages, MsgAccept, 2)
	slot := acc.Entries[0].Slot
	// Another master outbids us and its value is chosen in our slot.
	other := val(9, "theirs")
	step(t, n, Message{Type: MsgNack, From: 2, To: 1, Ballot: Ballot{Round: 50, Node: 2}})
	step(t, n, Message{Type: MsgFetchReply, From: 2, To: 1, Commit: slot + 1, Entries: []Entry{{Slot: slot, Ballot: Ballot{Round: 50, Node: 2}, Value: other, Chosen: true}}})
	drain(t, n, st)
	if st, _ := n.Status(0); st.Pending != 1 {
		t.Fatalf("our command was not queued again after another value won slot %d: %+v", slot, st)
	}
}

func TestProposeRefusesCommandLargerThanASlot(t *testing.T) {
	n, st := newTestNode(t, 1, func(c *Config) { c.MaxBatchBytes = 1024 })
	becomeMasterWith(t, n, st, Message{From: 2})
	err := n.Propose(0, Command{ID: CommandID{Client: 1, Seq: 1}, Data: make([]byte, 2000)})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

// TestCampaignWithoutAutoCampaignGivesUp: a campaign that finds no quorum
// ends, instead of retrying with ever higher ballots that would outbid a
// live master once the node is reachable again.
func TestCampaignWithoutAutoCampaignGivesUp(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	if err := n.Campaign(0); err != nil {
		t.Fatal(err)
	}
	drain(t, n, st)
	first, _ := n.Status(0)
	for i := 0; i < 200; i++ {
		n.Tick()
		drain(t, n, st)
	}
	got, _ := n.Status(0)
	if got.Role != "follower" || got.Promise != first.Promise {
		t.Fatalf("after 200 ticks without a quorum: %+v (started at %+v)", got, first)
	}
}
