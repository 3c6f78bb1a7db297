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
