package paxos

import (
	"maps"
	"slices"
	"testing"
)

// acceptsTo returns the Accepts to node to in ms, by slot: the slots the
// master opened, and the commands in each.
func acceptsTo(ms []Message, to NodeID) map[uint64][]CommandID {
	got := map[uint64][]CommandID{}
	for _, m := range ms {
		if m.Type == MsgAccept && m.To == to {
			var ids []CommandID
			for _, c := range m.Entries[0].Value.Cmds {
				ids = append(ids, c.ID)
			}
			got[m.Entries[0].Slot] = ids
		}
	}
	return got
}

// chooseAll has node 2 accept every slot in accs and steps the master's own
// accepts (after their sync), so that every slot is chosen.
func chooseAll(t *testing.T, n *Node, st *MemoryStorage, r Ready) Ready {
	t.Helper()
	for _, m := range r.Messages {
		if m.Type == MsgAccept && m.To == 2 {
			step(t, n, Message{Type: MsgAccepted, From: 2, To: 1, Ballot: m.Ballot, Slot: m.Entries[0].Slot})
		}
	}
	for _, m := range r.AfterSync {
		if m.To == 1 {
			step(t, n, m)
		}
	}
	return drain(t, n, st)
}

func cmdID(seq uint64) CommandID { return CommandID{Client: 7, Seq: seq} }

// TestProposeAheadOpensASlotWhileOneIsInFlight: queued commands wait for the
// slot in flight (batchReady); a command proposed ahead gets a new slot at
// once, of its own, and the queued ones follow once the slots are chosen.
func TestProposeAheadOpensASlotWhileOneIsInFlight(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMasterWith(t, n, st, Message{From: 2})
	if err := n.Propose(0, Command{ID: cmdID(1)}); err != nil {
		t.Fatal(err)
	}
	r1 := drain(t, n, st)
	first := acceptsTo(r1.Messages, 2)
	if len(first) != 1 {
		t.Fatalf("first command: %d slots opened, want 1: %v", len(first), first)
	}
	for seq := uint64(2); seq <= 3; seq++ {
		if err := n.Propose(0, Command{ID: cmdID(seq)}); err != nil {
			t.Fatal(err)
		}
	}
	if r := drain(t, n, st); len(acceptsTo(r.Messages, 2)) != 0 {
		t.Fatalf("queued commands opened a slot while one was in flight: %v", acceptsTo(r.Messages, 2))
	}
	if err := n.ProposeAhead(0, Command{ID: cmdID(4)}); err != nil {
		t.Fatal(err)
	}
	if s, _ := n.Status(0); s.Pending != 3 {
		t.Fatalf("status counts %d pending, want 3 (2 queued, 1 ahead)", s.Pending)
	}
	r2 := drain(t, n, st)
	ahead := acceptsTo(r2.Messages, 2)
	if len(ahead) != 1 {
		t.Fatalf("a command proposed ahead opened %d slots while one was in flight, want 1: %v", len(ahead), ahead)
	}
	for slot, ids := range ahead {
		if !slices.Equal(ids, []CommandID{cmdID(4)}) {
			t.Fatalf("the slot opened ahead (%d) holds %v, want only the command proposed ahead", slot, ids)
		}
	}
	r3 := chooseAll(t, n, st, Ready{Messages: append(r1.Messages, r2.Messages...), AfterSync: append(r1.AfterSync, r2.AfterSync...)})
	var order []CommandID
	for _, a := range r3.Committed {
		for _, c := range a.Value.Cmds {
			order = append(order, c.ID)
		}
	}
	if want := []CommandID{cmdID(1), cmdID(4)}; !slices.Equal(order, want) {
		t.Fatalf("applied %v, want %v (the queued ones not yet: they wait for a slot)", order, want)
	}
	oneSlotHolding(t, r3.Messages, "once the slots were chosen, the queue's slot (the two queued commands)", cmdID(2), cmdID(3))
}

// oneSlotHolding checks that msgs open exactly one slot at node 2, holding
// want in that order.
func oneSlotHolding(t *testing.T, msgs []Message, what string, want ...CommandID) {
	t.Helper()
	next := acceptsTo(msgs, 2)
	if len(next) != 1 {
		t.Fatalf("%s: %d slots opened, want 1: %v", what, len(next), next)
	}
	for _, ids := range next {
		if !slices.Equal(ids, want) {
			t.Fatalf("%s: the slot holds %v, want %v", what, ids, want)
		}
	}
}

// TestProposeAheadGoesBeforeTheQueue: when the window is full, commands
// proposed ahead take the next slot that frees up, before commands queued
// earlier; with no slot in flight then, they lead one batch with the queue.
func TestProposeAheadGoesBeforeTheQueue(t *testing.T) {
	n, st := newTestNode(t, 1, func(c *Config) { c.Window = 1 })
	becomeMasterWith(t, n, st, Message{From: 2})
	if err := n.Propose(0, Command{ID: cmdID(1)}); err != nil {
		t.Fatal(err)
	}
	r1 := drain(t, n, st)
	if err := n.Propose(0, Command{ID: cmdID(2)}); err != nil {
		t.Fatal(err)
	}
	if err := n.ProposeAhead(0, Command{ID: cmdID(3)}); err != nil {
		t.Fatal(err)
	}
	if r := drain(t, n, st); len(acceptsTo(r.Messages, 2)) != 0 {
		t.Fatalf("window 1 full, yet a slot opened: %v", acceptsTo(r.Messages, 2))
	}
	r2 := chooseAll(t, n, st, r1)
	oneSlotHolding(t, r2.Messages, "after the slot in flight was chosen, the next slot (the command proposed ahead, then the queue)", cmdID(3), cmdID(2))
}

// TestProposeAheadDroppedOnStepDown: a master that steps down hands back
// the commands it held ahead of its queue, as it does its queue.
func TestProposeAheadDroppedOnStepDown(t *testing.T) {
	n, st := newTestNode(t, 1, func(c *Config) { c.Window = 1 })
	becomeMasterWith(t, n, st, Message{From: 2})
	if err := n.Propose(0, Command{ID: cmdID(1)}); err != nil {
		t.Fatal(err)
	}
	drain(t, n, st)
	if err := n.ProposeAhead(0, Command{ID: cmdID(2)}); err != nil {
		t.Fatal(err)
	}
	drain(t, n, st)
	step(t, n, Message{Type: MsgNack, From: 2, To: 1, Ballot: Ballot{Round: 50, Node: 2}})
	r := drain(t, n, st)
	var dropped []CommandID
	for _, d := range r.Dropped {
		dropped = append(dropped, d.ID)
	}
	slices.SortFunc(dropped, func(a, b CommandID) int { return int(a.Seq) - int(b.Seq) })
	if want := []CommandID{cmdID(1), cmdID(2)}; !slices.Equal(dropped, want) {
		t.Fatalf("stepping down dropped %v, want %v", dropped, want)
	}
	if s, _ := n.Status(0); s.Pending != 0 {
		t.Fatalf("%d commands still pending after stepping down", s.Pending)
	}
}

// urgentTo returns, by slot, whether the Accepts to node to in ms carry
// Urgent.
func urgentTo(ms []Message, to NodeID) map[uint64]bool {
	got := map[uint64]bool{}
	for _, m := range ms {
		if m.Type == MsgAccept && m.To == to {
			got[m.Entries[0].Slot] = m.Urgent
		}
	}
	return got
}

// TestProposeAheadMarksItsSlotUrgent: the Accepts of a slot that holds
// commands proposed ahead carry Urgent (Message.Urgent), whether the slot
// opens beside one in flight or an idle group's batch is led by them, and
// so do their retransmissions; slots of queued commands do not. The
// master's own Ready for such a slot is Urgent, so that its runtime syncs
// it without the group-commit wait.
func TestProposeAheadMarksItsSlotUrgent(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMasterWith(t, n, st, Message{From: 2})
	check := func(what string, r Ready, wantReady bool, want map[uint64]bool) {
		t.Helper()
		if got := urgentTo(r.Messages, 2); !maps.Equal(got, want) {
			t.Fatalf("%s: Accepts to node 2 by slot, urgent or not: %v, want %v", what, got, want)
		}
		if r.Urgent != wantReady {
			t.Fatalf("%s: Ready.Urgent = %v, want %v", what, r.Urgent, wantReady)
		}
	}
	if err := n.Propose(0, Command{ID: cmdID(1)}); err != nil {
		t.Fatal(err)
	}
	r1 := drain(t, n, st)
	s1 := slices.Collect(maps.Keys(urgentTo(r1.Messages, 2)))
	if len(s1) != 1 {
		t.Fatalf("a command proposed in an idle group opened slots %v, want one", s1)
	}
	check("a queued command", r1, false, map[uint64]bool{s1[0]: false})

	if err := n.ProposeAhead(0, Command{ID: cmdID(2)}); err != nil {
		t.Fatal(err)
	}
	r2 := drain(t, n, st)
	check("a command proposed ahead beside a slot in flight", r2, true, map[uint64]bool{s1[0] + 1: true})

	var again []Message
	for range n.cfg.RetransmitTicks {
		n.Tick()
		again = append(again, drain(t, n, st).Messages...)
	}
	if got, want := urgentTo(again, 2), map[uint64]bool{s1[0]: false, s1[0] + 1: true}; !maps.Equal(got, want) {
		t.Fatalf("retransmitted Accepts, urgent or not: %v, want %v", got, want)
	}

	chooseAll(t, n, st, Ready{Messages: append(r1.Messages, r2.Messages...), AfterSync: append(r1.AfterSync, r2.AfterSync...)})
	if err := n.ProposeAhead(0, Command{ID: cmdID(3)}); err != nil {
		t.Fatal(err)
	}
	if err := n.Propose(0, Command{ID: cmdID(4)}); err != nil {
		t.Fatal(err)
	}
	r3 := drain(t, n, st)
	check("an idle group's batch led by a command proposed ahead", r3, true, map[uint64]bool{s1[0] + 2: true})
}

// TestAcceptorMarksUrgentReady: an acceptor that takes an urgent Accept
// says so in the Ready that holds its write; a plain Accept, or an urgent
// one it refuses, does not make its Ready urgent.
func TestAcceptorMarksUrgentReady(t *testing.T) {
	n, st := newTestNode(t, 2, nil)
	b := Ballot{Round: 5, Node: 1}
	accept := func(slot uint64, urgent bool, ballot Ballot) Ready {
		t.Helper()
		step(t, n, Message{Type: MsgAccept, From: 1, To: 2, Ballot: ballot, Urgent: urgent,
			Entries: []Entry{{Slot: slot, Ballot: ballot, Value: val(slot, "x")}}})
		return drain(t, n, st)
	}
	if r := accept(0, false, b); r.Urgent || len(r.Persist) == 0 {
		t.Fatalf("plain Accept: Ready.Urgent = %v with %d writes, want false with a write", r.Urgent, len(r.Persist))
	}
	if r := accept(1, true, b); !r.Urgent || len(r.Persist) == 0 {
		t.Fatalf("urgent Accept: Ready.Urgent = %v with %d writes, want true with a write", r.Urgent, len(r.Persist))
	}
	if r := accept(2, true, Ballot{Round: 4, Node: 1}); r.Urgent {
		t.Fatalf("refused urgent Accept (a lower ballot): Ready.Urgent = true, want false")
	}
	if r := accept(3, false, b); r.Urgent {
		t.Fatalf("plain Accept after an urgent one: Ready.Urgent = true, want false (the flag is per Ready)")
	}
}

// marksTo returns, by slot, how the Accepts to node to are marked: "" for
// plain, "u" for Urgent, "uc" for Urgent and Contended ("c" alone would be
// a bug: Contended is a kind of Urgent).
func marksTo(ms []Message, to NodeID) map[uint64]string {
	got := map[uint64]string{}
	for _, m := range ms {
		if m.Type == MsgAccept && m.To == to {
			s := ""
			if m.Urgent {
				s += "u"
			}
			if m.Contended {
				s += "c"
			}
			got[m.Entries[0].Slot] = s
		}
	}
	return got
}

// TestProposeContendedMarksItsSlot: a command proposed with
// ProposeContended goes ahead like ProposeAhead, and its slot's Accepts
// carry Contended as well as Urgent, retransmissions too, whether it opens
// a slot beside one in flight or leads an idle group's batch; the master's
// Ready for it is Contended. A command proposed ahead without it, even
// right after a contended one, is only Urgent: the mark does not outlive
// the commands that brought it.
func TestProposeContendedMarksItsSlot(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMasterWith(t, n, st, Message{From: 2})
	check := func(what string, r Ready, wantContended bool, want map[uint64]string) {
		t.Helper()
		if got := marksTo(r.Messages, 2); !maps.Equal(got, want) {
			t.Fatalf("%s: Accepts to node 2 by slot and mark: %v, want %v", what, got, want)
		}
		if r.Contended != wantContended {
			t.Fatalf("%s: Ready.Contended = %v, want %v", what, r.Contended, wantContended)
		}
	}
	if err := n.Propose(0, Command{ID: cmdID(1)}); err != nil {
		t.Fatal(err)
	}
	r1 := drain(t, n, st)
	s1 := slices.Collect(maps.Keys(marksTo(r1.Messages, 2)))
	if len(s1) != 1 {
		t.Fatalf("a command proposed in an idle group opened slots %v, want one", s1)
	}
	s := s1[0]
	check("a queued command", r1, false, map[uint64]string{s: ""})

	if err := n.ProposeContended(0, Command{ID: cmdID(2)}); err != nil {
		t.Fatal(err)
	}
	r2 := drain(t, n, st)
	check("a contended command beside a slot in flight", r2, true, map[uint64]string{s + 1: "uc"})

	if err := n.ProposeAhead(0, Command{ID: cmdID(3)}); err != nil {
		t.Fatal(err)
	}
	r3 := drain(t, n, st)
	check("a command proposed ahead after a contended one", r3, false, map[uint64]string{s + 2: "u"})

	var again []Message
	for range n.cfg.RetransmitTicks {
		n.Tick()
		again = append(again, drain(t, n, st).Messages...)
	}
	if got, want := marksTo(again, 2), map[uint64]string{s: "", s + 1: "uc", s + 2: "u"}; !maps.Equal(got, want) {
		t.Fatalf("retransmitted Accepts by slot and mark: %v, want %v", got, want)
	}

	chooseAll(t, n, st, Ready{Messages: slices.Concat(r1.Messages, r2.Messages, r3.Messages), AfterSync: slices.Concat(r1.AfterSync, r2.AfterSync, r3.AfterSync)})
	if err := n.ProposeContended(0, Command{ID: cmdID(4)}); err != nil {
		t.Fatal(err)
	}
	if err := n.Propose(0, Command{ID: cmdID(5)}); err != nil {
		t.Fatal(err)
	}
	r4 := drain(t, n, st)
	check("an idle group's batch led by a contended command", r4, true, map[uint64]string{s + 3: "uc"})

	chooseAll(t, n, st, r4)
	if err := n.ProposeAhead(0, Command{ID: cmdID(6)}); err != nil {
		t.Fatal(err)
	}
	r5 := drain(t, n, st)
	check("an idle group's batch led by a command proposed ahead, after a contended batch", r5, false, map[uint64]string{s + 4: "u"})
}

// TestAcceptorMarksContendedReady: an acceptor that takes a contended
// Accept says so in the Ready that holds its write; an urgent one, or a
// contended one it refuses, does not make its Ready contended.
func TestAcceptorMarksContendedReady(t *testing.T) {
	n, st := newTestNode(t, 2, nil)
	b := Ballot{Round: 5, Node: 1}
	accept := func(slot uint64, contended bool, ballot Ballot) Ready {
		t.Helper()
		step(t, n, Message{Type: MsgAccept, From: 1, To: 2, Ballot: ballot, Urgent: true, Contended: contended,
			Entries: []Entry{{Slot: slot, Ballot: ballot, Value: val(slot, "x")}}})
		return drain(t, n, st)
	}
	if r := accept(0, false, b); r.Contended || !r.Urgent {
		t.Fatalf("urgent Accept: Ready.Contended = %v, Urgent = %v, want false and true", r.Contended, r.Urgent)
	}
	if r := accept(1, true, b); !r.Contended || len(r.Persist) == 0 {
		t.Fatalf("contended Accept: Ready.Contended = %v with %d writes, want true with a write", r.Contended, len(r.Persist))
	}
	if r := accept(2, true, Ballot{Round: 4, Node: 1}); r.Contended {
		t.Fatalf("refused contended Accept (a lower ballot): Ready.Contended = true, want false")
	}
	if r := accept(3, false, b); r.Contended {
		t.Fatalf("urgent Accept after a contended one: Ready.Contended = true, want false (the flag is per Ready)")
	}
}
