package paxos

import "fmt"

// Snapshots and log compaction (field report F4).
//
// The state machines of a group snapshot themselves at a slot s: the snapshot
// holds the effect of every slot below s. Once a snapshot is durable, the
// runtime tells the core (SnapshotTaken) and the store may delete log entries
// below s minus a margin that serves peers slightly behind. Every deleted
// entry is below the commit index, so chosen: no promise and no vote that an
// acceptor owes is lost, because the promise is one ballot per group (kept
// in HardState) and votes below the commit index no longer matter.
//
// A node that is behind the oldest entry its peers keep cannot catch up from
// the log. When it fetches from such a peer, the peer answers with a
// FetchReply marked Behind whose Slot is the peer's snapshot slot, and the
// core asks its runtime, in Ready.Snapshots, for a snapshot of at least that
// slot from that peer. The runtime transfers it (the receiver picks the one
// sender and names the transfer), verifies it, makes it durable, restores the
// state machines from it, and calls InstallSnapshot. The core then knows every
// slot below it as chosen and applied, and learning goes on from there.
//
// Why this is safe: a snapshot at slot s reflects exactly the chosen values
// of slots below s, in order, because it was taken by a node that applied
// them (its commit index had passed them, see "Learning"). Installing it
// raises the commit index to s, which the commit index invariant (every slot
// below it is chosen, and its value is known) allows: the values are known
// through the snapshot. Entries at or above s that this node accepted stay,
// with the promise: the acceptor keeps every vote it may still owe.

// SnapshotStorage is implemented by stores that keep snapshots. The core
// reads it at start: a group's applied state starts at its snapshot slot.
type SnapshotStorage interface {
	// SnapshotSlot returns the slot of group g's newest durable snapshot,
	// which holds the effect of every slot below it; zero if none.
	SnapshotSlot(g GroupID) (uint64, error)
}

// SnapshotNeed asks the runtime for a snapshot of group Group covering at
// least every slot below Slot, from node From, whose log no longer holds
// the entries this node lacks.
type SnapshotNeed struct {
	Group GroupID
	From  NodeID
	Slot  uint64
}

// SnapshotTaken tells the core that group g's snapshot at slot is durable,
// so the store may delete entries below it (minus its margin): a Fetch or
// Prepare for such slots is answered with a request for a snapshot. slot must
// not be above the slots the core handed out in Ready.Committed.
func (n *Node) SnapshotTaken(g GroupID, slot uint64) error {
	gr, err := n.group(g)
	if err != nil {
		return err
	}
	if slot > gr.applied {
		return fmt.Errorf("paxos: snapshot of group %d at slot %d is above the slots handed out to apply (%d)", g, slot, gr.applied)
	}
	if slot > gr.snap {
		gr.snap = slot
	}
	// The snapshot holds these slots: memory need not, once their chosen
	// entries are durable (advanced); a peer that fetches them then gets
	// what the store's margin still holds, or the snapshot. Before that the
	// store may still hold an older, unchosen accept for such a slot.
	floor := min(slot, gr.durable)
	for s := gr.memFloor; s < floor; s++ {
		delete(gr.log, s)
	}
	gr.memFloor = max(gr.memFloor, floor)
	return nil
}

// InstallSnapshot tells the core that the runtime has made durable, and
// restored the state machines from, a snapshot of group g holding every
// slot below slot, with ms the group's membership at that slot (stored in
// the snapshot; a Membership without epochs means the initial one, right
// for snapshots written before membership changes existed). The core takes
// those slots as chosen and applied; Ready hands out chosen slots from slot
// on. A snapshot at or below what the core already applied changes
// nothing. The runtime must have finished every Ready it took before (their
// Committed slots are in the snapshot's past).
func (n *Node) InstallSnapshot(g GroupID, slot uint64, ms Membership) error {
	gr, err := n.group(g)
	if err != nil {
		return err
	}
	if slot <= gr.applied {
		return nil
	}
	if len(ms.Epochs) > 0 && ms.Epochs[0].From > slot {
		return fmt.Errorf("paxos: snapshot of group %d at slot %d: its membership starts at slot %d, after the snapshot", g, slot, ms.Epochs[0].From)
	}
	gr.installSnapshot(slot)
	return gr.setMembership(ms, slot)
}

// setMembership puts in place the membership ms of a snapshot at slot.
func (g *group) setMembership(ms Membership, slot uint64) error {
	if len(ms.Epochs) == 0 {
		ms = InitialMembership(g.n.cfg.Nodes)
	}
	if ms.Epochs[0].From > slot {
		return fmt.Errorf("paxos: group %d: the membership of the snapshot at slot %d starts at slot %d, after it", g.id, slot, ms.Epochs[0].From)
	}
	g.ms = ms.Clone()
	g.ms.Prune(slot)
	g.noteMember()
	g.touch()
	return nil
}

func (g *group) installSnapshot(slot uint64) {
	if slot <= g.applied {
		return
	}
	if slot > g.commit && g.role != follower {
		// Another master chose slots we did not learn; some may be slots we
		// proposed in under our ballot, whose values we cannot check now.
		// The commit rule ("Learning" in doc.go) forbids announcing a commit
		// index past them under this ballot, so we stop proposing under it.
		g.stepDown(0)
	}
	g.snap = max(g.snap, slot)
	g.untrusted = max(g.untrusted, slot)
	g.applied = slot
	g.durable = max(g.durable, slot)
	if slot > g.commit {
		// Our own values in the slots the snapshot covers may or may not
		// be in it: the caller retries them by id, and the state machine's
		// exactly-once table (restored with the snapshot) answers.
		for s, own := range g.mine {
			if s < slot {
				delete(g.mine, s)
				g.drop(own.Cmds)
			}
		}
		for s := range g.inflight {
			if s < slot {
				delete(g.inflight, s)
			}
		}
		g.commit = slot
		g.hardDirty = true
	}
	for s := range g.log {
		if s < slot {
			delete(g.log, s)
			delete(g.unsaved, s)
		}
	}
	g.memFloor = max(g.memFloor, slot)
	g.last = max(g.last, slot)
	g.knownCommit = max(g.knownCommit, slot)
	if g.next < slot && g.role == master {
		g.next = slot
	}
	// Keep commit walking over chosen entries we already hold above it.
	for {
		e, ok := g.log[g.commit]
		if !ok || !e.Chosen {
			break
		}
		g.commit++
	}
	g.touch()
}

// compacted reports whether slot may be gone from storage: it is below the
// newest snapshot, and the store keeps only a margin below that.
func (g *group) compacted(slot uint64) bool { return slot < g.snap }
