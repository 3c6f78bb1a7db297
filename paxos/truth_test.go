package paxos

import (
	"fmt"
	"slices"

	"github.com/lockd/lockd/paxos/internal/protomodel"
)

type slotKey struct {
	g    GroupID
	slot uint64
}

type voteKey struct {
	g    GroupID
	slot uint64
	b    Ballot
}

type vote struct {
	value ValueID
	by    map[NodeID]bool
}

// truth is the ground truth of a run, built from what nodes durably write and
// what they send, and the local rules checked on every message as it leaves a
// node. The simulator and the schedule tests share it.
//
// The commit rule (see "Learning" in doc.go) is checked where it is made, at
// the sender: a node that sends commit c under ballot b in a Commit or an
// Accept (the two messages followers learn from by ballot) must have proposed,
// at every slot below c where it proposed under b, the value that was chosen
// there. It fires at the first bad announcement, steps before a follower
// applies a wrong value because of it.
type truth struct {
	// initial is the initial configuration and delay alpha: config(s) is
	// initial plus every change chosen at a slot at or below s-delay.
	initial []NodeID
	delay   uint64
	// votes are durable accepts, by (group, slot, ballot). A value is chosen
	// the moment a majority of the voters of its slot's configuration has
	// durably accepted it under one ballot.
	votes map[voteKey]*vote
	// chosen is the value chosen for each slot.
	chosen map[slotKey]ValueID
	// values holds the chosen values themselves, for the membership
	// changes among them.
	changes map[GroupID]map[uint64]Change
	// prefix is, per group, the lowest slot not (yet) chosen.
	prefix map[GroupID]uint64
	// proposed holds, per (group, ballot), the value its owner sent in an
	// Accept for each slot, until a commit announcement under that ballot
	// covers the slot and the rule has been checked for it (a chosen value
	// never changes, so a slot is checked once).
	proposed map[groupBallot]map[uint64]ValueID
	// announced counts the slots the commit rule was checked for.
	announced int
	// noCommitRule switches the commit rule's check off, so that a test can
	// watch a broken rule run on to its distant consequence.
	noCommitRule bool
}

type groupBallot struct {
	g GroupID
	b Ballot
}

func newTruth(initial []NodeID, delay uint64) *truth {
	return &truth{initial: initial, delay: delay, votes: map[voteKey]*vote{}, chosen: map[slotKey]ValueID{},
		changes: map[GroupID]map[uint64]Change{}, prefix: map[GroupID]uint64{},
		proposed: map[groupBallot]map[uint64]ValueID{}}
}

// config returns config(s) of group g, and whether it is determined yet:
// every slot at or below s-delay is chosen.
func (t *truth) config(g GroupID, s uint64) ([]Member, bool) {
	if s >= t.delay && s-t.delay >= t.prefix[g] {
		return nil, false
	}
	ms := InitialMembership(t.initial).Latest()
	var slots []uint64
	for j := range t.changes[g] {
		if j+t.delay <= s {
			slots = append(slots, j)
		}
	}
	slices.Sort(slots)
	for _, j := range slots {
		if next, err := applyChange(ms, t.changes[g][j]); err == nil {
			ms = next
		}
	}
	return ms, true
}

// persisted records the durable accepts of node's synced write.
func (t *truth) persisted(node NodeID, ws []GroupWrite) error {
	for _, w := range ws {
		for _, e := range w.Entries {
			if e.Chosen {
				// A chosen entry copied from a peer is not a vote.
				continue
			}
			k := voteKey{w.Group, e.Slot, e.Ballot}
			v := t.votes[k]
			if v == nil {
				v = &vote{value: e.Value.ID, by: map[NodeID]bool{}}
				t.votes[k] = v
			}
			if v.value != e.Value.ID {
				// Two values under one ballot for one slot: only possible if a
				// ballot was reused (a crash forgot it) or a proposer broke rule 5.
				return fmt.Errorf("group %d slot %d ballot %s: node %d accepted value %v, another node accepted %v under the same ballot",
					w.Group, e.Slot, e.Ballot, node, e.Value.ID, v.value)
			}
			v.by[node] = true
			if err := t.tally(w.Group, e.Slot, v, &e.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

// tally decides whether the votes v for slot make its value chosen.
func (t *truth) tally(g GroupID, slot uint64, v *vote, val *Value) error {
	ms, ok := t.config(g, slot)
	if !ok {
		return fmt.Errorf("CONFIG: group %d slot %d: a vote for %v before the slot's configuration was determined (slots below %d chosen, delay %d)",
			g, slot, v.value, t.prefix[g], t.delay)
	}
	var by []NodeID
	for id := range v.by {
		by = append(by, id)
	}
	if !majority(ms, by) {
		return nil
	}
	sk := slotKey{g, slot}
	if prev, ok := t.chosen[sk]; ok {
		if prev != v.value {
			return fmt.Errorf("SAFETY: group %d slot %d chose two values: %v and %v", g, slot, prev, v.value)
		}
		return nil
	}
	t.chosen[sk] = v.value
	if c, ok := ChangeOf(val); ok {
		if t.changes[g] == nil {
			t.changes[g] = map[uint64]Change{}
		}
		t.changes[g][slot] = c
	}
	for {
		if _, ok := t.chosen[slotKey{g, t.prefix[g]}]; !ok {
			break
		}
		t.prefix[g]++
	}
	return nil
}

// quorum checks a quorum the core counted for slot (its phase 1 promisers
// or phase 2 acceptors): a majority of the voters of config(slot).
func (t *truth) quorum(node NodeID, g GroupID, slot uint64, phase int, b Ballot, voters []NodeID) error {
	ms, ok := t.config(g, slot)
	if !ok {
		return fmt.Errorf("QUORUM: node %d counted a phase-%d quorum %v for group %d slot %d under %s before the slot's configuration was determined",
			node, phase, voters, g, slot, b)
	}
	if !majority(ms, voters) {
		return fmt.Errorf("QUORUM: node %d counted %v as a phase-%d quorum for group %d slot %d under %s, but the slot's voters are %v",
			node, voters, phase, g, slot, b, Voters(ms))
	}
	return nil
}

// sent checks a message as it leaves its node: one value per slot per
// ballot, and the commit rule.
func (t *truth) sent(m Message) error {
	switch m.Type {
	case MsgAccept:
		if len(m.Entries) != 1 {
			return nil
		}
		e := m.Entries[0]
		k := groupBallot{m.Group, m.Ballot}
		p := t.proposed[k]
		if p == nil {
			p = map[uint64]ValueID{}
			t.proposed[k] = p
		}
		if prev, ok := p[e.Slot]; ok && prev != e.Value.ID {
			return fmt.Errorf("node %d proposed %v and %v for group %d slot %d under one ballot %s", m.From, prev, e.Value.ID, m.Group, e.Slot, m.Ballot)
		}
		p[e.Slot] = e.Value.ID
		if _, ok := t.config(m.Group, e.Slot); !ok {
			return fmt.Errorf("CONFIG: node %d proposes in group %d slot %d under %s before the slot's configuration is determined (slots below %d chosen, delay %d)",
				m.From, m.Group, e.Slot, m.Ballot, t.prefix[m.Group], t.delay)
		}
		if err := t.checkAnnounce(m); err != nil {
			return err
		}
	case MsgCommit:
		return t.checkAnnounce(m)
	case MsgFetchReply, MsgPromise:
		// A chosen mark is only ever copied from a node that learned it:
		// it must name the value that was chosen.
		for _, e := range m.Entries {
			if !e.Chosen {
				continue
			}
			if v, ok := t.chosen[slotKey{m.Group, e.Slot}]; !ok || v != e.Value.ID {
				return fmt.Errorf("CHOSEN MARK: node %d sends group %d slot %d as chosen with %v in a %s, but the chosen value is %v (chosen: %v)",
					m.From, m.Group, e.Slot, e.Value.ID, m.Type, v, ok)
			}
		}
	}
	return nil
}

// checkAnnounce checks the commit rule for a message that followers learn
// from by ballot.
func (t *truth) checkAnnounce(m Message) error {
	if t.noCommitRule {
		return nil
	}
	p := t.proposed[groupBallot{m.Group, m.Ballot}]
	below := map[uint64]ValueID{}
	for slot, own := range p {
		if slot < m.Commit {
			below[slot] = own
		}
	}
	if len(below) == 0 {
		return nil
	}
	// The rule as the protocol model states it (protomodel.CommitAllowed),
	// over the ground truth of what was chosen.
	chosen := func(slot uint64) (ValueID, bool) {
		v, ok := t.chosen[slotKey{m.Group, slot}]
		return v, ok
	}
	if err := protomodel.CommitAllowed(below, chosen, m.Commit); err != nil {
		return fmt.Errorf("COMMIT RULE: node %d announces commit %d under ballot %s in a %s of group %d: %w; a follower holding its accept would take the wrong value",
			m.From, m.Commit, m.Ballot, m.Type, m.Group, err)
	}
	for slot := range below {
		delete(p, slot)
	}
	t.announced += len(below)
	return nil
}

// changeCount is the number of membership changes chosen, in all groups.
func (t *truth) changeCount() int {
	n := 0
	for _, cs := range t.changes {
		n += len(cs)
	}
	return n
}
