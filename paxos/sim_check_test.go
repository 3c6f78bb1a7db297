package paxos

import (
	"fmt"

	"github.com/lockd/lockd/paxos/internal/protomodel"
)

// checker holds the ground truth of a run and checks it after every step.
type checker struct {
	s *sim
	// truth holds the votes and chosen values, and checks the local rules
	// on every message a node sends.
	truth *truth
	// learned is the log as nodes applied it (must equal chosen).
	applied map[slotKey]ValueID
	// first is where each command id first appears in the learned log.
	first map[GroupID]map[CommandID]uint64
	// cmds maps a command id to its client's group, for the success check.
	successes int
	installed int // snapshots installed
	changes   int // membership changes the operator got queued
	proposals int
	checks    int
}

func newChecker(s *sim) *checker {
	return &checker{s: s, truth: newTruth(s.ids[:s.cfg.nodes], s.delay()), applied: map[slotKey]ValueID{},
		first: map[GroupID]map[CommandID]uint64{}}
}

// unsyncedOnlyCommits checks the core's claim that a Ready without
// MustSync changes nothing a reply may vouch for: no entry, no promise.
// before holds promises written by earlier Readys of the same batch.
func (c *checker) unsyncedOnlyCommits(sn *simNode, ws []GroupWrite, before map[GroupID]Ballot) {
	for _, w := range ws {
		prev, ok := before[w.Group]
		if !ok {
			hs, _ := sn.store.HardState(w.Group)
			prev = hs.Promised
		}
		if len(w.Entries) > 0 || (w.Hard != nil && w.Hard.Promised != prev) {
			c.s.fail("node %d group %d: a Ready without MustSync writes %d entries and promise %v (before: %s)",
				sn.id, w.Group, len(w.Entries), w.Hard, prev)
		}
	}
}

// persisted records the durable accepts of one synced write.
func (c *checker) persisted(sn *simNode, ws []GroupWrite) {
	for _, w := range ws {
		hs, _ := sn.store.HardState(w.Group)
		for _, e := range w.Entries {
			// TLA+ Paxos invariant: an acceptor's promise is at least every
			// ballot it voted in. (Chosen entries copied from a peer are
			// not votes of this acceptor.)
			if !e.Chosen && hs.Promised.Less(e.Ballot) {
				c.s.fail("node %d group %d slot %d: durably accepted under ballot %s but its durable promise is only %s",
					sn.id, w.Group, e.Slot, e.Ballot, hs.Promised)
				return
			}
		}
	}
	if err := c.truth.persisted(sn.id, ws); err != nil {
		c.s.fail("%v", err)
	}
}

// sent checks a message as it leaves its node (see truth.sent).
func (c *checker) sent(m Message) {
	if err := c.truth.sent(m); err != nil {
		c.s.fail("%v", err)
	}
}

// learned checks a slot a node applies against the ground truth.
func (c *checker) learned(sn *simNode, a Apply) {
	k := slotKey{a.Group, a.Slot}
	truth, ok := c.truth.chosen[k]
	if !ok {
		c.s.fail("SAFETY: node %d applied group %d slot %d value %v, which no majority accepted durably", sn.id, a.Group, a.Slot, a.Value.ID)
		return
	}
	if truth != a.Value.ID {
		c.s.fail("SAFETY: node %d applied group %d slot %d value %v, but %v was chosen", sn.id, a.Group, a.Slot, a.Value.ID, truth)
		return
	}
	if prev, ok := c.applied[k]; ok && prev != a.Value.ID {
		c.s.fail("SAFETY: node %d applied group %d slot %d value %v, another node applied %v", sn.id, a.Group, a.Slot, a.Value.ID, prev)
		return
	}
	c.applied[k] = a.Value.ID
	f := c.first[a.Group]
	if f == nil {
		f = map[CommandID]uint64{}
		c.first[a.Group] = f
	}
	for _, cmd := range a.Value.Cmds {
		if s, ok := f[cmd.ID]; !ok || a.Slot < s {
			f[cmd.ID] = a.Slot
		}
	}
}

// outcome checks the Applier's verdict on one command occurrence: it takes
// effect exactly at its first slot and never again.
func (c *checker) outcome(sn *simNode, g GroupID, cmd *Command, o Outcome) {
	first := c.first[g][cmd.ID]
	if o.Forgotten {
		return
	}
	if o.Slot != first {
		c.s.fail("EXACTLY-ONCE: node %d: command %v first chosen at group %d slot %d, but its outcome says slot %d (duplicate=%v)",
			sn.id, cmd.ID, g, first, o.Slot, o.Duplicate)
	}
}

func (c *checker) proposed(cl *simClient, cmd Command) { c.proposals++ }

// success checks a reported success (F6): the client's own command is in the
// log, and the slot reported is where it took effect.
func (c *checker) success(cl *simClient, id CommandID, o Outcome) {
	c.successes++
	first, ok := c.first[cl.group][id]
	if !ok {
		c.s.fail("F6: client %d was told %v succeeded at slot %d, but it is not in the log of group %d", cl.id, id, o.Slot, cl.group)
		return
	}
	if first != o.Slot {
		c.s.fail("F6: client %d was told %v succeeded at slot %d, but it took effect at slot %d", cl.id, id, o.Slot, first)
	}
}

// afterStep holds a node's core to the protocol model after each step
// (paxos/internal/protomodel): a master never keeps in flight a slot it
// knows chose another value (MustStepDown), and every slot below the commit
// index that the core holds in memory is marked chosen.
func (c *checker) afterStep(sn *simNode) {
	c.checks++
	if sn.core == nil {
		return
	}
	for _, g := range sn.core.groups {
		if g.role == master {
			// What it proposed under its ballot and has not yet announced
			// as committed (truth.sent records every Accept it sends).
			proposed := c.truth.proposed[groupBallot{g.id, g.ballot}]
			for s := range proposed {
				if e, ok := g.log[s]; ok && e.Chosen && protomodel.MustStepDown(proposed, s, e.Value.ID) {
					c.s.fail("MODEL: node %d, master of group %d at %s, keeps slot %d in flight with %v after learning it chose %v",
						sn.id, g.id, g.ballot, s, proposed[s], e.Value.ID)
					return
				}
			}
		}
		for s := max(g.memFloor, g.commit-min(g.commit, 8)); s < g.commit; s++ {
			if e, ok := g.log[s]; ok && !e.Chosen && s >= g.memFloor {
				// Below the commit index every entry is chosen; the core
				// marks them as it walks (markChosen), so an unmarked one
				// means the commit index walked over an unchosen entry.
				c.s.fail("MODEL: node %d group %d: slot %d is below the commit index %d but not marked chosen", sn.id, g.id, s, g.commit)
				return
			}
		}
	}
}

// final checks the end state: all live nodes applied the same log.
func (c *checker) final() error {
	if c.s.err != nil {
		return c.s.err
	}
	for _, cl := range c.s.clients {
		for seq := uint64(1); seq <= uint64(c.s.cfg.perClient); seq++ {
			if _, ok := c.first[cl.group][CommandID{Client: cl.id, Seq: seq}]; !ok {
				return fmt.Errorf("client %d finished, but command %d is not in the log", cl.id, seq)
			}
		}
	}
	return nil
}
