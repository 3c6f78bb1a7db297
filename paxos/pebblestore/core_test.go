package pebblestore

import (
	"cmp"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/lockd/lockd/paxos"
)

// coreHarness drives one paxos.Node (node 1 of 3) over a Store in the order
// paxos.Ready demands, and plays nodes 2 and 3 as acceptors that promise and
// accept everything.
type coreHarness struct {
	t       *testing.T
	node    *paxos.Node
	store   *Store
	inbox   []paxos.Message
	applied []paxos.Apply
}

func coreConfig() paxos.Config {
	return paxos.Config{ID: 1, Nodes: []paxos.NodeID{1, 2, 3}, Groups: 4, Rand: rand.New(rand.NewSource(1)).Intn}
}

// peerReply is what an acceptor that agrees to everything answers.
func peerReply(m paxos.Message) (paxos.Message, bool) {
	r := paxos.Message{Group: m.Group, From: m.To, To: m.From, Ballot: m.Ballot}
	switch m.Type {
	case paxos.MsgPrepare:
		r.Type, r.Slot = paxos.MsgPromise, m.Slot
	case paxos.MsgAccept:
		r.Type, r.Slot = paxos.MsgAccepted, m.Entries[0].Slot
	default:
		return r, false
	}
	return r, true
}

// run works off Readys until the node is quiet.
func (h *coreHarness) run() {
	h.t.Helper()
	for range 1000 {
		for len(h.inbox) > 0 {
			m := h.inbox[0]
			h.inbox = h.inbox[1:]
			if err := h.node.Step(m); err != nil {
				h.t.Fatalf("step %s: %v", m.String(), err)
			}
		}
		if !h.node.HasReady() {
			return
		}
		r := h.node.Ready()
		for _, err := range r.StorageErrors {
			h.t.Fatalf("storage error: %v", err)
		}
		var replies []paxos.Message
		for _, m := range r.Messages {
			if rep, ok := peerReply(m); ok {
				replies = append(replies, rep)
			}
		}
		// The durability point: AfterSync messages leave only after this.
		if err := h.store.Save(r.Persist); err != nil {
			h.t.Fatal(err)
		}
		for _, m := range r.AfterSync {
			if m.To == 1 {
				replies = append(replies, m)
			} else if rep, ok := peerReply(m); ok {
				replies = append(replies, rep)
			}
		}
		h.applied = append(h.applied, r.Committed...)
		h.node.Advance(r)
		h.inbox = append(h.inbox, replies...)
	}
	h.t.Fatalf("the node did not settle in 1000 Readys")
}

// TestCoreStateSurvivesRestartOnPebble runs the real core over the pebble
// store: node 1 becomes master of two groups and gets commands chosen; after
// a crash (only synced data kept) a fresh core on the reopened store has the
// same promises and commit indexes, and replays the same chosen values.
func TestCoreStateSurvivesRestartOnPebble(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openT(t, "node1", fs)
	node, err := paxos.New(coreConfig(), s)
	if err != nil {
		t.Fatal(err)
	}
	h := &coreHarness{t: t, node: node, store: s}
	groups := []paxos.GroupID{1, 2}
	for _, g := range groups {
		if err := node.Campaign(g); err != nil {
			t.Fatal(err)
		}
	}
	h.run()
	seq := uint64(0)
	for round := range 3 {
		for _, g := range groups {
			for range round + 1 {
				seq++
				cmd := paxos.Command{ID: paxos.CommandID{Client: 42, Seq: seq}, Data: []byte(fmt.Sprintf("acquire lock-%d", seq))}
				if err := node.Propose(g, cmd); err != nil {
					t.Fatalf("propose in group %d: %v", g, err)
				}
			}
		}
		h.run()
	}
	before := map[paxos.GroupID]paxos.GroupStatus{}
	for _, g := range groups {
		st, err := node.Status(g)
		if err != nil {
			t.Fatal(err)
		}
		if st.Role != "master" || st.Commit < 3 || st.Promise.Node != 1 {
			t.Fatalf("group %d before the restart: %+v, want node 1 master with 3 slots chosen", g, st)
		}
		before[g] = st
	}
	if n := countCommands(h.applied); n != int(seq) {
		t.Fatalf("%d commands applied, proposed %d", n, seq)
	}

	s = openT(t, "node1", crash(t, fs, s, 0, 0))
	defer s.Close()
	node, err = paxos.New(coreConfig(), s)
	if err != nil {
		t.Fatal(err)
	}
	h2 := &coreHarness{t: t, node: node, store: s}
	h2.run()
	for _, g := range groups {
		st, err := node.Status(g)
		if err != nil {
			t.Fatal(err)
		}
		if st.Promise != before[g].Promise || st.Commit != before[g].Commit {
			t.Fatalf("group %d after the restart: promise %v commit %d, before it: promise %v commit %d",
				g, st.Promise, st.Commit, before[g].Promise, before[g].Commit)
		}
	}
	// Slots of one group come in order; groups interleave as they will.
	byGroup := func(as []paxos.Apply) []paxos.Apply {
		return slices.SortedStableFunc(slices.Values(as), func(a, b paxos.Apply) int { return cmp.Compare(a.Group, b.Group) })
	}
	if got, want := byGroup(h2.applied), byGroup(h.applied); !reflect.DeepEqual(got, want) {
		t.Fatalf("replay after the restart differs:\n got %+v\nwant %+v", got, want)
	}
}

func countCommands(as []paxos.Apply) int {
	n := 0
	for _, a := range as {
		n += len(a.Value.Cmds)
	}
	return n
}
