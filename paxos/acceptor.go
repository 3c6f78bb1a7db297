package paxos

// onPrepare applies acceptor rules 1 and 3 to a Prepare.
func (g *group) onPrepare(m *Message) {
	if m.Ballot.Less(g.promised) {
		g.reply(m, Message{Type: MsgNack, Ballot: g.promised})
		return
	}
	if latest := g.ms.Epochs[len(g.ms.Epochs)-1]; m.Commit <= g.commit && g.applied >= latest.From && !isVoter(latest.Members, m.From) {
		// The configuration in force no longer lists the proposer as a
		// voter (or never did), and it knows no more than we do, so it has
		// not seen a change that would make it one. Refusing is always
		// safe; Behind makes it fetch and learn that it was removed,
		// instead of disrupting the group with ever higher ballots.
		g.reply(m, Message{Type: MsgNack, Ballot: g.promised, Behind: true})
		return
	}
	if g.commit > m.Slot+uint64(g.n.cfg.MaxFetchEntries) || g.compacted(m.Slot) {
		// The proposer would need more chosen entries than one Promise may
		// carry, or entries our log may no longer hold (below our
		// snapshot). It must catch up first (fetch, or install a
		// snapshot); the promise stays untouched.
		g.reply(m, Message{Type: MsgNack, Ballot: g.promised, Behind: true})
		return
	}
	g.setPromise(m.Ballot)
	g.observeBallot(m.From, m.Ballot)
	// The reply is exact: every slot from m.Slot up to the last one we know.
	// Bounded by the check above plus the slots in flight above the commit.
	var es []Entry
	if m.Slot < g.last {
		es = g.entries(m.Slot, g.last, int(g.last-m.Slot))
	}
	g.reply(m, Message{Type: MsgPromise, Ballot: m.Ballot, Slot: m.Slot, Entries: es})
}

// onAccept applies acceptor rule 2 to an Accept.
func (g *group) onAccept(m *Message) {
	mut := g.n.cfg.mutate
	if len(m.Entries) != 1 {
		g.n.badMessage(m, "an Accept carries exactly one entry")
		return
	}
	if m.Ballot.Less(g.promised) && mut&mutAcceptIgnorePromise == 0 {
		g.reply(m, Message{Type: MsgNack, Ballot: g.promised})
		return
	}
	if mut&mutAcceptNoRaise == 0 {
		g.setPromise(m.Ballot)
	}
	g.observeBallot(m.From, m.Ballot)
	g.heardFromMaster(m.From)
	e := m.Entries[0]
	var cur *Entry
	known := e.Slot < g.commit // chosen: its value is in the log, or in a snapshot
	if c, ok := g.log[e.Slot]; ok && e.Slot >= g.memFloor {
		cur, known = c, known || c.Chosen
	} else if known && e.Slot >= g.untrusted {
		if es, err := g.n.storage.Entries(g.id, e.Slot, e.Slot+1, 1); err == nil && len(es) == 1 {
			cur = &es[0]
		}
	}
	if !known {
		g.store(&Entry{Slot: e.Slot, Ballot: m.Ballot, Value: e.Value})
		g.n.urgent = g.n.urgent || m.Urgent
		g.n.contended = g.n.contended || m.Contended
	}
	if known && (cur == nil || cur.Value.ID != e.Value.ID) {
		// The slot chose another value (or one compacted away, which we
		// cannot compare): a vote for this one would be a vote we never
		// recorded. The Nack carries our commit index, so the master
		// fetches the slot and, by the commit rule, steps down.
		g.reply(m, Message{Type: MsgNack, Ballot: g.promised})
		g.learnCommit(m.From, m.Ballot, m.Commit, true)
		return
	}
	// A slot known as chosen with this very value: acknowledging it again
	// is what the vote would have been, and lets a retrying master finish.
	g.reply(m, Message{Type: MsgAccepted, Ballot: m.Ballot, Slot: e.Slot})
	g.learnCommit(m.From, m.Ballot, m.Commit, true)
}

// reply sends a reply to m. Replies that vouch for acceptor state leave only
// after that state is durable (rule 4).
func (g *group) reply(m *Message, r Message) {
	r.Group = g.id
	r.From = g.n.cfg.ID
	r.To = m.From
	r.Commit = g.commit
	if g.n.cfg.mutate&mutReplyBeforeSync != 0 && r.To != g.n.cfg.ID {
		g.n.msgs = append(g.n.msgs, r)
	} else {
		g.n.after = append(g.n.after, r)
	}
	g.touch()
}

// observeBallot notes a ballot seen in a request from another proposer. A
// proposer that sees a higher ballot than its own is outbid.
func (g *group) observeBallot(from NodeID, b Ballot) {
	g.seeRound(b)
	if g.role != follower && g.ballot.Less(b) {
		g.stepDown(from)
	}
}

// heardFromMaster resets the failure detector on a message from a master
// whose ballot is not below our promise.
func (g *group) heardFromMaster(from NodeID) {
	if from == g.n.cfg.ID {
		return
	}
	g.leader = from
	g.resetElectionTimeout()
}
