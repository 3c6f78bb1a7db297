package paxos

// learnCommit takes in a commit index announced by node from. Every slot
// below commit is chosen. With byBallot set, b is the announcer's master
// ballot, and an entry we accepted under b holds the chosen value: a master
// proposes one value per slot per ballot, and for slots chosen before its
// ballot it proposes the chosen value.
func (g *group) learnCommit(from NodeID, b Ballot, commit uint64, byBallot bool) {
	if commit > g.knownCommit {
		g.knownCommit = commit
		g.knownFrom = from
	}
	for g.commit < commit {
		e, ok := g.entry(g.commit)
		if !ok || !(e.Chosen || (byBallot && e.Ballot == b)) {
			break
		}
		g.markChosen(e.Slot, e.Ballot, e.Value)
	}
	g.touch()
}

// markChosen records that slot chose v (accepted under ballot b, as far as we
// know). It is the one place where a slot becomes chosen on this node.
func (g *group) markChosen(slot uint64, b Ballot, v Value) {
	if slot < g.commit {
		return
	}
	if p, ok := g.inflight[slot]; ok && g.role == master && p.value.ID != v.ID && g.stepsDownForLostSlot(b) {
		// The commit rule (see "Learning" in doc.go): we proposed another
		// value here under our ballot, and followers that accepted it take
		// any commit index we announce under this ballot as covering it.
		// So we stop announcing under this ballot before the commit index
		// can pass this slot. Another ballot chose the slot, so we are
		// outbid anyway; we only learned it from a message without a ballot.
		g.stepDown(0)
	}
	cur, ok := g.log[slot]
	if !ok || cur.Value.ID != v.ID {
		g.store(&Entry{Slot: slot, Ballot: b, Value: v, Chosen: true})
	} else {
		cur.Chosen = true
	}
	delete(g.inflight, slot)
	if own, ok := g.mine[slot]; ok {
		delete(g.mine, slot)
		if own.ID != v.ID {
			g.lost(own.Cmds)
		}
	}
	if slot == g.commit {
		for {
			e, ok := g.log[g.commit]
			if !ok || !e.Chosen {
				break
			}
			g.commit++
		}
		g.hardDirty = true
		if g.role == master && g.next < g.commit {
			// We learned slots chosen beyond what we proposed (a FetchReply
			// about slots we never proposed in): new values go after them.
			// Without this, fill's window test (next - commit) would wrap.
			g.next = g.commit
		}
	}
	g.touch()
}

// lost takes back commands of ours whose slot chose another value: they go to
// the head of the queue if we still propose, else back to the caller.
func (g *group) lost(cmds []Command) {
	if g.role == master || g.n.cfg.Contend {
		g.pending = append(append([]Command(nil), cmds...), g.pending...)
		for i := range cmds {
			g.pendingBytes += cmds[i].size()
		}
		return
	}
	g.drop(cmds)
}

// drop hands commands back in Ready.Dropped: this node will not propose them.
func (g *group) drop(cmds []Command) {
	for _, c := range cmds {
		g.n.dropped = append(g.n.dropped, Dropped{Group: g.id, ID: c.ID, Err: &NotMasterError{Group: g.id, Hint: g.leader}})
	}
	g.touch()
}

// onFetch answers with chosen entries from m.Slot on.
func (g *group) onFetch(m *Message) {
	if m.Slot >= g.commit {
		return
	}
	es := g.entries(m.Slot, g.commit, g.n.cfg.MaxFetchEntries)
	if g.compacted(m.Slot) && (len(es) == 0 || es[0].Slot != m.Slot) {
		// Our log no longer holds what the peer lacks: it needs a snapshot
		// (see snapshot.go). Slot names ours, which covers everything below.
		g.n.msgs = append(g.n.msgs, Message{Type: MsgFetchReply, Group: g.id, From: g.n.cfg.ID, To: m.From, Slot: g.snap, Commit: g.commit, Behind: true})
		g.touch()
		return
	}
	// Bound the reply in bytes too; the peer fetches the rest next.
	bytes := 0
	for i := range es {
		bytes += es[i].Value.Size()
		if i > 0 && bytes > maxFetchBytes {
			es = es[:i]
			break
		}
	}
	g.n.msgs = append(g.n.msgs, Message{Type: MsgFetchReply, Group: g.id, From: g.n.cfg.ID, To: m.From, Slot: m.Slot, Commit: g.commit, Entries: es})
	g.touch()
}

// onFetchReply installs chosen entries.
func (g *group) onFetchReply(m *Message) {
	g.fetching = false
	if m.Behind {
		// The peer keeps no log below its snapshot at m.Slot: ask the
		// runtime for that snapshot.
		// The runtime runs one transfer per group at a time; this need
		// comes again with every fetch until a snapshot is installed, so
		// a transfer that failed is tried again.
		if m.Slot > g.applied {
			g.n.snaps = append(g.n.snaps, SnapshotNeed{Group: g.id, From: m.From, Slot: m.Slot})
			g.touch()
		}
		g.learnCommit(m.From, Ballot{}, m.Commit, false)
		return
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Chosen {
			g.markChosen(e.Slot, e.Ballot, e.Value)
		}
	}
	g.learnCommit(m.From, Ballot{}, m.Commit, false)
}

// maybeFetch asks the best-informed peer for chosen entries we lack.
func (g *group) maybeFetch() {
	if g.knownCommit <= g.commit || g.knownFrom == 0 || g.knownFrom == g.n.cfg.ID {
		return
	}
	if g.fetching && g.fetchElapsed < g.n.cfg.RetransmitTicks {
		return
	}
	g.fetching = true
	g.fetchElapsed = 0
	g.n.msgs = append(g.n.msgs, Message{Type: MsgFetch, Group: g.id, From: g.n.cfg.ID, To: g.knownFrom, Slot: g.commit, Commit: g.commit})
	g.touch()
}

// stepsDownForLostSlot is true unless a mutation test restores an older rule: the
// master must step down when a slot it proposed in chose another value.
func (g *group) stepsDownForLostSlot(b Ballot) bool {
	switch mut := g.n.cfg.mutate; {
	case mut&mutMasterKeepsLostSlot != 0:
		return false
	case mut&mutStepDownOnHigherBallot != 0:
		return g.ballot.Less(b)
	}
	return true
}
