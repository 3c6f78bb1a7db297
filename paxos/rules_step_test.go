package paxos

import "testing"

// One-step tests for rules that used to be checked only by the simulator
// (issue 8): each drives one node by hand, so that breaking the rule fails
// here in -short, at the step that breaks it, whatever the seeds reach.

// TestStepPromiseIsWrittenWithMustSync: a raised promise vouches for the
// node's future refusals, so the write that carries it must be synced, and
// the Promise leaves only after it (AfterSync), never with the messages that
// may leave at once. The same holds for a proposer's own promise when it
// campaigns: its Prepares leave only after that sync.
func TestStepPromiseIsWrittenWithMustSync(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	b := Ballot{Round: 4, Node: 2}
	step(t, n, Message{Type: MsgPrepare, From: 2, To: 1, Ballot: b})
	r := n.Ready()
	if len(r.Persist) != 1 || r.Persist[0].Hard == nil || r.Persist[0].Hard.Promised != b {
		t.Fatalf("a prepare at %s wrote %+v, want the hard state with the promise", b, r.Persist)
	}
	if !r.MustSync {
		t.Fatalf("the write of promise %s is not synced (Ready.MustSync false): a crash could forget a promise already sent", b)
	}
	if m, ok := find(r.Messages, MsgPromise, 2); ok {
		t.Fatalf("promise left before the sync: %s", m.String())
	}
	if _, ok := find(r.AfterSync, MsgPromise, 2); !ok {
		t.Fatalf("no promise in AfterSync: %+v", r.AfterSync)
	}
	if err := st.Save(r.Persist); err != nil {
		t.Fatal(err)
	}
	n.Advance(r)

	// Our own campaign raises our promise above b: synced before any Prepare.
	if err := n.Campaign(0); err != nil {
		t.Fatal(err)
	}
	r = n.Ready()
	if len(r.Persist) != 1 || r.Persist[0].Hard == nil || !b.Less(r.Persist[0].Hard.Promised) {
		t.Fatalf("a campaign wrote %+v, want the hard state with a promise above %s", r.Persist, b)
	}
	if !r.MustSync {
		t.Fatalf("the write of our own ballot %s is not synced (Ready.MustSync false): a restart could reuse it", r.Persist[0].Hard.Promised)
	}
	if m, ok := find(r.Messages, MsgPrepare, 2); ok {
		t.Fatalf("prepare left before our ballot was durable: %s", m.String())
	}
	if _, ok := find(r.AfterSync, MsgPrepare, 2); !ok {
		t.Fatalf("no prepare in AfterSync: %+v", r.AfterSync)
	}
}

// TestStepCommitStopsAtUnchosenEntry: a master at ballot b announces commit
// 3. The follower accepted slot 0 and slot 2 under b but slot 1 under another
// ballot, so it knows the chosen value of slot 0 only: slot 1 may have chosen
// what the master proposed under b, which it never saw. The commit index
// stops at 1 (slot 2 is not skipped to), only slot 0 is applied, and the
// follower fetches from slot 1.
func TestStepCommitStopsAtUnchosenEntry(t *testing.T) {
	n, st := newTestNode(t, 2, nil)
	b, other := Ballot{Round: 5, Node: 1}, Ballot{Round: 3, Node: 3}
	step(t, n, Message{Type: MsgAccept, From: 3, To: 2, Ballot: other, Entries: []Entry{{Slot: 1, Value: val(11, "other-1")}}})
	step(t, n, Message{Type: MsgAccept, From: 1, To: 2, Ballot: b, Entries: []Entry{{Slot: 0, Value: val(10, "b-0")}}})
	step(t, n, Message{Type: MsgAccept, From: 1, To: 2, Ballot: b, Entries: []Entry{{Slot: 2, Value: val(12, "b-2")}}})
	if r := drain(t, n, st); len(r.Committed) != 0 {
		t.Fatalf("accepts with commit 0 applied %+v", r.Committed)
	}

	step(t, n, Message{Type: MsgCommit, From: 1, To: 2, Ballot: b, Commit: 3})
	r := drain(t, n, st)
	if len(r.Committed) != 1 || r.Committed[0].Slot != 0 || r.Committed[0].Value.ID != val(10, "").ID {
		t.Fatalf("commit 3 under %s applied %+v, want slot 0 only (slot 1 was accepted under %s)", b, r.Committed, other)
	}
	if hs, _ := st.HardState(0); hs.Commit != 1 {
		t.Fatalf("durable commit index %d after commit 3 under %s, want 1: it walked over slot 1, accepted under %s", hs.Commit, b, other)
	}
	if s, _ := n.Status(0); s.Commit != 1 || s.Applied != 1 {
		t.Fatalf("status %+v, want commit 1 and applied 1", s)
	}
	f, ok := find(r.Messages, MsgFetch, 1)
	if !ok || f.Slot != 1 {
		t.Fatalf("want a fetch from slot 1 to the master, got %+v", r.Messages)
	}

	// The fetch brings what slot 1 chose (under b); slot 2 follows.
	chosen := val(21, "b-1")
	step(t, n, Message{Type: MsgFetchReply, From: 1, To: 2, Slot: 1, Commit: 3, Entries: []Entry{
		{Slot: 1, Ballot: b, Value: chosen, Chosen: true}, {Slot: 2, Ballot: b, Value: val(12, "b-2"), Chosen: true}}})
	r = drain(t, n, st)
	if len(r.Committed) != 2 || r.Committed[0].Value.ID != chosen.ID || r.Committed[1].Slot != 2 {
		t.Fatalf("after the fetch applied %+v, want slot 1 (%v) and slot 2", r.Committed, chosen.ID)
	}
}

// TestStepFetchedChosenValueReplacesOwn: node 1, master at its first ballot,
// accepted its own value for slot 0, then was outbid and became a follower.
// A FetchReply says slot 0 chose another value. The node stores and applies
// the chosen value, not its own, and its command comes back to its caller:
// dropped (with a hint to retry) when it only proposes as master, queued
// again when it contends for its own commands. The node is a follower when
// it learns, as a master that learns this steps down first.
func TestStepFetchedChosenValueReplacesOwn(t *testing.T) {
	for _, contend := range []bool{false, true} {
		name := "master-only"
		if contend {
			name = "contend"
		}
		t.Run(name, func(t *testing.T) {
			n, st := newTestNode(t, 1, func(c *Config) { c.Contend = contend })
			becomeMasterWith(t, n, st, Message{From: 2})
			mine := Command{ID: CommandID{Client: 5, Seq: 1}, Data: []byte("mine")}
			if err := n.Propose(0, mine); err != nil {
				t.Fatal(err)
			}
			r := drain(t, n, st)
			acc, ok := find(r.Messages, MsgAccept, 2)
			if !ok || acc.Entries[0].Slot != 0 {
				t.Fatalf("no accept for slot 0: %+v", r.Messages)
			}
			own := acc.Entries[0].Value
			if es, _ := st.Entries(0, 0, 1, 1); len(es) != 1 || es[0].Value.ID != own.ID {
				t.Fatalf("node 1 does not hold its own value at slot 0: %+v", es)
			}
			var dropped []Dropped
			step(t, n, Message{Type: MsgNack, From: 2, To: 1, Ballot: Ballot{Round: 50, Node: 2}})
			dropped = append(dropped, drain(t, n, st).Dropped...)
			if s, _ := n.Status(0); s.Role != "follower" {
				t.Fatalf("after a nack at 50.2 node 1 is %s, want follower", s.Role)
			}

			theirs := val(9, "theirs")
			step(t, n, Message{Type: MsgFetchReply, From: 2, To: 1, Slot: 0, Commit: 1,
				Entries: []Entry{{Slot: 0, Ballot: Ballot{Round: 50, Node: 2}, Value: theirs, Chosen: true}}})
			r = drain(t, n, st)
			dropped = append(dropped, r.Dropped...)
			if len(r.Committed) != 1 || r.Committed[0].Slot != 0 || r.Committed[0].Value.ID != theirs.ID {
				t.Fatalf("applied %+v, want slot 0 with the chosen value %v (own value %v)", r.Committed, theirs.ID, own.ID)
			}
			es, _ := st.Entries(0, 0, 1, 1)
			if len(es) != 1 || es[0].Value.ID != theirs.ID {
				t.Fatalf("stored slot 0 %+v, want the chosen value %v, not our own %v", es, theirs.ID, own.ID)
			}
			if hs, _ := st.HardState(0); hs.Commit != 1 {
				t.Fatalf("durable commit %d, want 1", hs.Commit)
			}

			s, _ := n.Status(0)
			back := s.Pending
			for _, d := range dropped {
				if d.ID == mine.ID {
					back++
				}
			}
			if back != 1 {
				t.Fatalf("our command came back %d times (pending %d, dropped %+v), want once", back, s.Pending, dropped)
			}
			if contend && s.Pending != 1 {
				t.Fatalf("contending node: pending %d, want our command queued again", s.Pending)
			}
		})
	}
}

// TestStepAcceptedOfEarlierBallotDoesNotCount: node 1 proposed at slot 0
// under ballot b1, was outbid, and is master again under b2, where phase 1
// made it propose another value at slot 0. Node 2's Accepted for slot 0
// under b1 arrives late. It is a vote for the b1 value, not for the b2
// value: with the master's own vote under b2 it would make a false majority.
// The slot stays in flight until node 2 accepts under b2.
func TestStepAcceptedOfEarlierBallotDoesNotCount(t *testing.T) {
	n, st := newTestNode(t, 1, nil)
	becomeMasterWith(t, n, st, Message{From: 2})
	if err := n.Propose(0, Command{ID: CommandID{Client: 5, Seq: 1}, Data: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	r := drain(t, n, st)
	acc1, ok := find(r.Messages, MsgAccept, 2)
	if !ok || acc1.Entries[0].Slot != 0 {
		t.Fatalf("no accept for slot 0 under the first ballot: %+v", r.Messages)
	}
	b1 := acc1.Ballot
	if own, ok := find(r.AfterSync, MsgAccepted, 1); ok {
		step(t, n, own) // our own vote under b1: one of three, not chosen
	}
	if r := drain(t, n, st); len(r.Committed) != 0 {
		t.Fatalf("one vote chose slot 0: %+v", r.Committed)
	}

	// Node 3 is promised to 2.3 and accepted another value there.
	b23 := Ballot{Round: 2, Node: 3}
	step(t, n, Message{Type: MsgNack, From: 3, To: 1, Ballot: b23})
	drain(t, n, st)
	other := val(7, "other")
	r = campaignWith(t, n, st, true, Message{From: 3, Entries: []Entry{{Slot: 0, Ballot: b23, Value: other}}})
	acc2, ok := find(r.Messages, MsgAccept, 2)
	if !ok || acc2.Entries[0].Slot != 0 || acc2.Entries[0].Value.ID != other.ID || !b23.Less(acc2.Ballot) {
		t.Fatalf("master again: want an accept of %v at slot 0 above %s, got %+v", other.ID, b23, r.Messages)
	}
	b2 := acc2.Ballot
	own2, ok := find(r.AfterSync, MsgAccepted, 1)
	if !ok || own2.Ballot != b2 {
		t.Fatalf("no own vote under %s: %+v", b2, r.AfterSync)
	}
	step(t, n, own2)
	if r := drain(t, n, st); len(r.Committed) != 0 {
		t.Fatalf("our own vote alone chose slot 0: %+v", r.Committed)
	}

	// The late vote of node 2 for b1.
	step(t, n, Message{Type: MsgAccepted, From: 2, To: 1, Ballot: b1, Slot: 0})
	r = drain(t, n, st)
	if len(r.Committed) != 0 {
		t.Fatalf("an Accepted under the earlier ballot %s counted toward %s: slot 0 chose %+v with only one vote for it", b1, b2, r.Committed)
	}
	if s, _ := n.Status(0); s.Commit != 0 || s.InFlight != 1 || s.Role != "master" {
		t.Fatalf("after a vote under %s: %+v, want slot 0 still in flight under %s", b1, s, b2)
	}
	if es, _ := st.Entries(0, 0, 1, 1); len(es) != 1 || es[0].Chosen {
		t.Fatalf("slot 0 stored as chosen: %+v", es)
	}

	// Node 2's vote under b2 chooses it.
	step(t, n, Message{Type: MsgAccepted, From: 2, To: 1, Ballot: b2, Slot: 0})
	r = drain(t, n, st)
	if len(r.Committed) != 1 || r.Committed[0].Value.ID != other.ID {
		t.Fatalf("two votes under %s: applied %+v, want slot 0 with %v", b2, r.Committed, other.ID)
	}
}
