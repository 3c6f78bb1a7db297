package paxos

import (
	"bytes"
	"errors"
	"testing"
)

// TestApplyChangeRules: each change applies only where it makes sense, and
// one that does not changes nothing (every node skips it alike).
func TestApplyChangeRules(t *testing.T) {
	ms := InitialMembership([]NodeID{3, 1, 2}).Latest()
	steps := []struct {
		c    Change
		ok   bool
		want string
	}{
		{Change{Op: AddLearner, Node: 4, Addr: "a4"}, true, "from 0: 1 2 3 (4)"},
		{Change{Op: AddLearner, Node: 4}, false, ""},
		{Change{Op: Promote, Node: 1}, false, ""},
		{Change{Op: Promote, Node: 4}, true, "from 0: 1 2 3 4"},
		{Change{Op: Remove, Node: 9}, false, ""},
		{Change{Op: Remove, Node: 1}, true, "from 0: 2 3 4"},
		{Change{Op: Remove, Node: 2}, true, "from 0: 3 4"},
		{Change{Op: Remove, Node: 3}, true, "from 0: 4"},
		{Change{Op: Remove, Node: 4}, false, ""}, // the last voter stays
	}
	for i, st := range steps {
		next, err := applyChange(ms, st.c)
		if (err == nil) != st.ok {
			t.Fatalf("step %d %s: err %v, want ok=%v", i, st.c, err, st.ok)
		}
		if err != nil {
			if !errors.Is(err, ErrBadChange) {
				t.Fatalf("step %d: %v does not wrap ErrBadChange", i, err)
			}
			continue
		}
		if got := (Membership{Epochs: []Epoch{{Members: next}}}).String(); got != st.want {
			t.Fatalf("step %d %s: %s, want %s", i, st.c, got, st.want)
		}
		ms = next
	}
}

// TestMembershipEpochs: a change chosen at slot j governs from j+delay on;
// Prune keeps what still governs some slot at or above its argument.
func TestMembershipEpochs(t *testing.T) {
	m := InitialMembership([]NodeID{1, 2, 3})
	add := Value{Cmds: []Command{changeCommand(Change{Op: AddLearner, Node: 4, Addr: "x"}, 1)}}
	m.apply(10, &Value{}, 5) // not a change
	m.apply(11, &add, 5)
	if len(m.Epochs) != 2 || m.Epochs[1].From != 16 {
		t.Fatalf("after the change at 11 with delay 5: %s", m)
	}
	if got := Voters(m.At(15)); len(got) != 3 || memberIndex(m.At(15), 4) >= 0 {
		t.Fatalf("slot 15 is governed by the old configuration: %v", m.At(15))
	}
	if memberIndex(m.At(16), 4) < 0 {
		t.Fatalf("slot 16 is governed by the new one: %v", m.At(16))
	}
	m.Prune(15)
	if len(m.Epochs) != 2 {
		t.Fatalf("pruned too much at 15: %s", m)
	}
	m.Prune(16)
	if len(m.Epochs) != 1 || m.Epochs[0].From != 16 {
		t.Fatalf("pruned at 16: %s", m)
	}
}

// TestProposeChangeRefusals: the errors an operator can meet, each saying
// what to do.
func TestProposeChangeRefusals(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	if _, ok := IsNotMaster(n.ProposeChange(0, Change{Op: AddLearner, Node: 4})); !ok {
		t.Fatalf("a follower must redirect")
	}
	becomeMaster(t, n, st)
	if err := n.ProposeChange(0, Change{Op: Promote, Node: 2}); !errors.Is(err, ErrBadChange) {
		t.Fatalf("promote a voter: %v", err)
	}
	if err := n.ProposeChange(0, Change{Op: AddLearner, Node: 4, Addr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := n.ProposeChange(0, Change{Op: Remove, Node: 2}); !errors.Is(err, ErrChangePending) {
		t.Fatalf("a second change while one is queued: %v", err)
	}
	if err := n.Propose(0, Command{ID: CommandID{Client: ChangeClient, Seq: 1}, Data: []byte("x")}); err == nil {
		t.Fatalf("a client command with the reserved client id was queued")
	}
}

// FuzzDecodeMembership: no input makes DecodeMembership panic or fail
// without ErrCorrupt, and what it accepts re-encodes to the same bytes.
func FuzzDecodeMembership(f *testing.F) {
	m := InitialMembership([]NodeID{1, 2, 3})
	f.Add(AppendMembership(nil, &m))
	m.Epochs = append(m.Epochs, Epoch{From: 300, Members: []Member{{ID: 1, Voter: true}, {ID: 2, Voter: true}, {ID: 4, Addr: "127.0.0.1:7004"}}})
	f.Add(AppendMembership(nil, &m))
	f.Add([]byte("MEMB\x01\x00"))
	f.Add([]byte("MEMB\x01\x01\x00\x01\x00\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeMembership(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if out := AppendMembership(nil, &got); !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, out)
		}
	})
}

// FuzzDecodeChange: the same for the command that carries a change, which
// arrives from peers inside log values.
func FuzzDecodeChange(f *testing.F) {
	for _, c := range []Change{{Op: AddLearner, Node: 4, Addr: "127.0.0.1:7004"}, {Op: Promote, Node: 4}, {Op: Remove, Node: 1}} {
		f.Add(changeCommand(c, 1).Data)
	}
	f.Add([]byte("MCHG\x01\x09\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeChange(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if out := changeCommand(c, 1).Data; !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, out)
		}
	})
}

// settle runs the master's Readys, answering every Accept with the
// Accepteds of node 1 (its own, after the sync) and of voters, until
// nothing is left in flight. It returns the highest slot an Accept named.
func settle(t *testing.T, n *Node, st *MemoryStorage, voters ...NodeID) (top uint64, prepares []Message) {
	t.Helper()
	for i := 0; i < 100 && n.HasReady(); i++ {
		r := drain(t, n, st)
		for _, m := range r.AfterSync {
			if m.To == 1 {
				step(t, n, m)
			}
			if m.Type == MsgPrepare {
				prepares = append(prepares, m)
			}
		}
		for _, m := range r.Messages {
			if m.Type != MsgAccept || m.To == 1 {
				continue
			}
			top = max(top, m.Entries[0].Slot)
			if hasNode(voters, m.To) {
				step(t, n, Message{Type: MsgAccepted, From: m.To, To: 1, Ballot: m.Ballot, Slot: m.Entries[0].Slot})
			}
		}
	}
	return top, prepares
}

// TestStepNewVoterPromisesBeforeItsSlots: once a promotion is chosen at slot
// k, the slots from k+alpha on are governed by four voters, and the master,
// whose phase 1 was answered by nodes 1 and 2 of the old three, must not
// propose there before a majority of the four (three) promised its ballot:
// it asks nodes 3 and 4, proposes nothing at k+alpha, and goes on once node
// 4 promises.
func TestStepNewVoterPromisesBeforeItsSlots(t *testing.T) {
	const alpha = 4
	n, st := newTestNode(t, 1, func(c *Config) { c.changeDelay = alpha })
	becomeMasterWith(t, n, st, Message{From: 2})
	if err := n.ProposeChange(0, Change{Op: AddLearner, Node: 4, Addr: "x"}); err != nil {
		t.Fatal(err)
	}
	settle(t, n, st, 2)
	step(t, n, Message{Type: MsgCommit, From: 4, To: 1, Commit: 1}) // node 4 reports its progress
	if err := n.ProposeChange(0, Change{Op: Promote, Node: 4}); err != nil {
		t.Fatal(err)
	}
	k := n.groups[0].next // where the promotion goes
	top, prepares := settle(t, n, st, 2)
	if err := n.Propose(0, Command{ID: CommandID{Client: 1, Seq: 1}, Data: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	more, p2 := settle(t, n, st, 2)
	top, prepares = max(top, more), append(prepares, p2...)
	if top >= k+alpha {
		t.Fatalf("the master proposed at slot %d, at or after slot %d where the four voters govern, with promises from 1 and 2 only", top, k+alpha)
	}
	var to4 *Message
	for i := range prepares {
		if prepares[i].To == 4 {
			to4 = &prepares[i]
		}
	}
	if to4 == nil {
		t.Fatalf("the master did not ask the new voter 4 for a promise (prepares %v)", prepares)
	}
	step(t, n, Message{Type: MsgPromise, From: 4, To: 1, Ballot: to4.Ballot, Slot: to4.Slot})
	top, _ = settle(t, n, st, 2, 4)
	if top < k+alpha {
		t.Fatalf("with promises from 1, 2 and 4 the master still proposes nothing at slot %d or after (top %d)", k+alpha, top)
	}
}
