package paxos

import (
	"maps"
	"slices"
	"strings"
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

// TestProposeAheadMarksItsSlot: the Accepts of a slot that holds commands
// proposed ahead carry Urgent (Message.Urgent), and also Contended when one
// of them was proposed with ProposeContended, whether the slot opens beside
// one in flight or an idle group's batch is led by them, and so do their
// retransmissions; slots of queued commands carry neither. The master's own
// Ready for such a slot is Urgent (its runtime syncs it without the
// group-commit wait), and Contended with the mark. A command proposed
// ahead right after a contended one is only Urgent: the mark does not
// outlive the commands that brought it.
func TestProposeAheadMarksItsSlot(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMasterWith(t, n, st, Message{From: 2})
	check := func(what string, r Ready, want map[uint64]string) {
		t.Helper()
		if got := marksTo(r.Messages, 2); !maps.Equal(got, want) {
			t.Fatalf("%s: Accepts to node 2 by slot and mark: %v, want %v", what, got, want)
		}
		all := strings.Join(slices.Collect(maps.Values(want)), "")
		if u, c := strings.Contains(all, "u"), strings.Contains(all, "c"); r.Urgent != u || r.Contended != c {
			t.Fatalf("%s: Ready.Urgent = %v, Ready.Contended = %v, want %v and %v", what, r.Urgent, r.Contended, u, c)
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
	check("a queued command", r1, map[uint64]string{s: ""})

	if err := n.ProposeContended(0, Command{ID: cmdID(2)}); err != nil {
		t.Fatal(err)
	}
	r2 := drain(t, n, st)
	check("a contended command beside a slot in flight", r2, map[uint64]string{s + 1: "uc"})

	if err := n.ProposeAhead(0, Command{ID: cmdID(3)}); err != nil {
		t.Fatal(err)
	}
	r3 := drain(t, n, st)
	check("a command proposed ahead after a contended one", r3, map[uint64]string{s + 2: "u"})

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
	check("an idle group's batch led by a contended command", r4, map[uint64]string{s + 3: "uc"})

	chooseAll(t, n, st, r4)
	if err := n.ProposeAhead(0, Command{ID: cmdID(6)}); err != nil {
		t.Fatal(err)
	}
	r5 := drain(t, n, st)
	check("an idle group's batch led by a command proposed ahead, after a contended batch", r5, map[uint64]string{s + 4: "u"})
}

// TestAcceptorMarksReady: an acceptor that takes an urgent Accept says so
// in the Ready that holds its write, and a contended one too; a plain
// Accept, or a marked one it refuses, marks nothing, and the marks do not
// outlive their Ready.
func TestAcceptorMarksReady(t *testing.T) {
	n, st := newTestNode(t, 2, nil)
	b := Ballot{Round: 5, Node: 1}
	for i, c := range []struct {
		what                 string
		urgent, contended    bool
		ballot               Ballot
		wantUrgent, wantCont bool
	}{
		{"plain Accept", false, false, b, false, false},
		{"urgent Accept", true, false, b, true, false},
		{"contended Accept", true, true, b, true, true},
		{"refused contended Accept (a lower ballot)", true, true, Ballot{Round: 4, Node: 1}, false, false},
		{"plain Accept after marked ones", false, false, b, false, false},
	} {
		step(t, n, Message{Type: MsgAccept, From: 1, To: 2, Ballot: c.ballot, Urgent: c.urgent, Contended: c.contended,
			Entries: []Entry{{Slot: uint64(i), Ballot: c.ballot, Value: val(uint64(i), "x")}}})
		r := drain(t, n, st)
		if r.Urgent != c.wantUrgent || r.Contended != c.wantCont {
			t.Fatalf("%s: Ready.Urgent = %v, Ready.Contended = %v, want %v and %v", c.what, r.Urgent, r.Contended, c.wantUrgent, c.wantCont)
		}
		if c.wantUrgent && len(r.Persist) == 0 {
			t.Fatalf("%s: a marked Ready with no write", c.what)
		}
	}
}
