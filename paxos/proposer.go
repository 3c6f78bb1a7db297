package paxos

import "slices"

// campaign starts phase 1 with a ballot above every ballot seen, for every
// slot from the commit index on. Only a voter of the configuration of its
// commit index campaigns (membership.go).
func (g *group) campaign() {
	if g.role == master {
		return
	}
	ms, ok := g.confKnown(g.commit)
	if !ok || !isVoter(ms, g.n.cfg.ID) {
		g.resetElectionTimeout()
		return
	}
	round := max(g.maxRound, g.promised.Round) + 1
	g.ballot = Ballot{Round: round, Node: g.n.cfg.ID}
	g.role = preparing
	g.promisers = map[NodeID]uint64{}
	g.asked = map[NodeID]bool{}
	g.p1 = map[uint64]Entry{}
	g.prepFrom = g.commit
	g.p1top = g.commit
	g.prepConf = ms
	g.prepElapsed = 0
	g.leader = 0
	g.inflight = map[uint64]*proposal{}
	g.contendElapsed = 0
	g.sendPrepare(g.allVoters(), g.prepFrom)
	g.resetElectionTimeout()
}

// sendPrepare sends Prepare for our ballot from slot from on to the nodes
// of to. Our own Prepare is handled at once; the Prepare to peers leaves
// only after the ballot (our own promise) is durable, so a restarted node
// never reuses it (rule 4).
func (g *group) sendPrepare(to []NodeID, from uint64) {
	for _, id := range to {
		m := Message{Type: MsgPrepare, Group: g.id, From: g.n.cfg.ID, To: id, Ballot: g.ballot, Slot: from, Commit: g.commit}
		if id == g.n.cfg.ID {
			g.onPrepare(&m)
			continue
		}
		g.n.after = append(g.n.after, m)
	}
	g.touch()
}

// onPromise merges a phase-1 reply for our current ballot. A master takes
// promises too: those of voters it asked for when a configuration with new
// voters came into its reach (see askPromises).
func (g *group) onPromise(m *Message) {
	if (g.role != preparing && g.role != master) || m.Ballot != g.ballot {
		return
	}
	if f, ok := g.promisers[m.From]; ok && f <= m.Slot {
		return
	}
	g.promisers[m.From] = m.Slot
	floor := max(m.Slot, g.prepFrom)
	if g.role == master {
		floor = max(floor, g.next)
	}
	if g.n.cfg.mutate&mutPhase2OwnValue == 0 {
		for _, e := range m.Entries {
			if e.Slot < floor {
				continue
			}
			cur, ok := g.p1[e.Slot]
			if !ok || (e.Chosen && !cur.Chosen) || (!cur.Chosen && cur.Ballot.Less(e.Ballot)) {
				g.p1[e.Slot] = e
			}
			g.p1top = max(g.p1top, e.Slot+1)
		}
	}
	g.learnCommit(m.From, Ballot{}, m.Commit, false)
	switch g.role {
	case preparing:
		if ms, ok := g.confKnown(g.prepFrom); ok && g.phase1Covers(g.prepFrom, ms) {
			g.becomeMaster()
		}
	case master:
		g.reclaim()
		g.touch()
	}
}

// phase1Covers reports whether the promises for our ballot that cover slot
// s come from a majority of the voters of ms, the configuration of s.
func (g *group) phase1Covers(s uint64, ms []Member) bool {
	if g.n.cfg.mutate&mutPrepareConfQuorum != 0 {
		ms = g.prepConf
	}
	return majority(ms, g.coverers(s))
}

// coverers returns the nodes whose promise for our ballot covers slot s.
func (g *group) coverers(s uint64) []NodeID {
	var ids []NodeID
	for id, f := range g.promisers {
		if f <= s {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// becomeMaster ends phase 1: the slots from the commit index up to the
// highest one reported get the value of rule 5 (see reclaim), and new
// commands go after them.
func (g *group) becomeMaster() {
	g.role = master
	g.leader = g.n.cfg.ID
	g.next = g.commit
	g.reclaim()
	g.heartbeatElapsed = 0
	g.touch()
}

// reclaim proposes, in slot order from next, the value of rule 5 for every
// slot that phase 1 reported (a chosen value as it is, the highest-ballot
// one, or a no-op for a gap), as far as mayPropose allows.
func (g *group) reclaim() {
	for g.role == master && g.next < g.p1top {
		s := g.next
		if s < g.commit {
			g.next = g.commit
			continue
		}
		e, ok := g.p1[s]
		if c, known := g.log[s]; known && c.Chosen {
			delete(g.p1, s)
			g.next = s + 1
			continue
		}
		if ok && e.Chosen {
			delete(g.p1, s)
			g.markChosen(s, e.Ballot, e.Value)
			g.next = max(g.next, s+1)
			continue
		}
		if !g.mayPropose(s) {
			return
		}
		delete(g.p1, s)
		if ok {
			g.propose(s, e.Value, 0)
		} else {
			g.propose(s, g.newValue(nil), 0)
		}
		g.next = max(g.next, s+1)
	}
	if g.role == master && g.next >= g.p1top {
		g.p1 = map[uint64]Entry{}
	}
}

// mayPropose reports whether the master may propose in slot s now: it knows
// config(s), it is one of its voters (else it was removed: it steps down
// once the slots below s are chosen),
// and a majority of its voters promised our ballot for s (else it asks the
// ones that did not).
func (g *group) mayPropose(s uint64) bool {
	ms, ok := g.confKnown(s)
	if !ok {
		return false
	}
	if !isVoter(ms, g.n.cfg.ID) {
		// Removed from slot s on: we finish the slots below it (a new
		// master would have to), then step down for good, as a node that
		// does not vote in the configuration of its commit index never
		// campaigns.
		if g.commit >= s {
			g.stepDown(0)
		}
		return false
	}
	if !g.phase1Covers(s, ms) {
		g.askPromises(ms)
		return false
	}
	return true
}

// askPromises sends a Prepare for our ballot, from our commit index on, to
// every voter of ms that has not promised it for the slots it governs and
// was not asked since the last heartbeat. Reusing the ballot is safe: we
// have proposed nothing at or above the slots these promises are for.
func (g *group) askPromises(ms []Member) {
	var to []NodeID
	for _, x := range ms {
		if f, ok := g.promisers[x.ID]; x.Voter && (!ok || f > g.commit) && !g.asked[x.ID] {
			g.asked[x.ID] = true
			to = append(to, x.ID)
		}
	}
	if len(to) > 0 {
		g.sendPrepare(to, g.commit)
	}
}

func (g *group) newValue(cmds []Command) Value {
	g.valueSeq++
	return Value{ID: ValueID{Ballot: g.ballot, N: g.valueSeq}, Cmds: cmds}
}

// propose runs phase 2 for slot under our ballot. Our own accept is taken at
// once but counts only when its Accepted comes back after the sync. The
// mark says whether the slot holds commands proposed ahead (Message.Urgent,
// Message.Contended).
func (g *group) propose(slot uint64, v Value, mark slotMark) {
	if g.n.quorumHook != nil {
		g.n.quorumHook(g.id, slot, 1, g.ballot, g.coverers(slot))
	}
	g.inflight[slot] = &proposal{value: v, mark: mark}
	g.sendAccept(slot, v, nil, mark)
}

// sendAccept sends the Accept for slot to every node we know in the group
// (learners too: they follow the log closely that way) but those in skip.
func (g *group) sendAccept(slot uint64, v Value, skip []NodeID, mark slotMark) {
	send := func(to NodeID) {
		m := Message{Type: MsgAccept, Group: g.id, From: g.n.cfg.ID, To: to, Ballot: g.ballot, Commit: g.commit,
			Urgent: mark&markUrgent != 0, Contended: mark&markContended != 0, Entries: []Entry{{Slot: slot, Ballot: g.ballot, Value: v}}}
		if to == g.n.cfg.ID {
			g.onAccept(&m)
			return
		}
		// An Accept may leave before our own accept is durable: if we crash,
		// we never use this ballot again.
		g.n.msgs = append(g.n.msgs, m)
	}
	if !hasNode(skip, g.n.cfg.ID) {
		send(g.n.cfg.ID)
	}
	for _, to := range g.peers() {
		if !hasNode(skip, to) {
			send(to)
		}
	}
	g.touch()
}

// onAccepted counts a phase-2 vote for our ballot: a slot is chosen once a
// majority of the voters of its configuration accepted it.
func (g *group) onAccepted(m *Message) {
	if g.role != master || m.Ballot != g.ballot {
		return
	}
	p, ok := g.inflight[m.Slot]
	if !ok {
		return
	}
	if !hasNode(p.acks, m.From) {
		p.acks = append(p.acks, m.From)
	}
	ms, known := g.confKnown(m.Slot)
	if g.n.cfg.mutate&mutPrepareConfQuorum != 0 {
		ms, known = g.prepConf, true
	}
	if known && majority(ms, p.acks) {
		if g.n.quorumHook != nil {
			g.n.quorumHook(g.id, m.Slot, 2, g.ballot, slices.Clone(p.acks))
		}
		g.markChosen(m.Slot, g.ballot, p.value)
	}
}

// onNack handles a refusal: a higher promise outbids us; Behind means we must
// catch up before phase 1 can succeed.
func (g *group) onNack(m *Message) {
	g.seeRound(m.Ballot)
	g.learnCommit(m.From, Ballot{}, m.Commit, false)
	if g.role == follower {
		return
	}
	if m.Behind || g.ballot.Less(m.Ballot) {
		hint := m.Ballot.Node
		if m.Behind || hint == g.n.cfg.ID {
			hint = 0
		}
		g.stepDown(hint)
	}
}

// stepDown makes us a follower. Queued commands go back to the caller unless
// this node contends for its own commands; slots in flight stay in g.mine
// until we learn what they chose.
func (g *group) stepDown(hint NodeID) {
	g.aheadIntoQueue() // only a master keeps commands ahead of its queue
	g.role = follower
	g.leader = hint
	g.inflight = map[uint64]*proposal{}
	g.p1 = nil
	g.changeQ = nil
	if !g.n.cfg.Contend {
		// Commands in flight may still be chosen (a new master re-proposes
		// what it finds), but we will no longer drive them. The caller
		// retries them with the same id at the new master, where a
		// duplicate is answered with the first outcome, so waiting here
		// for an answer that may never come would only cost it time.
		slots := make([]uint64, 0, len(g.mine))
		for s := range g.mine {
			slots = append(slots, s)
		}
		slices.Sort(slots)
		for _, s := range slots {
			g.drop(g.mine[s].Cmds)
		}
		clear(g.mine)
		g.drop(g.pending)
		g.pending = nil
		g.pendingBytes = 0
	}
	g.resetElectionTimeout()
	g.touch()
}

// fill puts queued commands into new slots while the window has room.
func (g *group) fill() {
	c := &g.n.cfg
	if ms, ok := g.confKnown(g.commit); ok && g.role == master && !isVoter(ms, c.ID) {
		g.stepDown(0) // removed, and every slot before that is chosen
	}
	// Slots phase 1 reported come first; those beyond the configurations
	// known at the time are proposed as the applied slots reach them.
	g.reclaim()
	room := func() bool {
		return g.role == master && g.next >= g.p1top && g.next-g.commit < uint64(c.Window) && g.mayPropose(g.next)
	}
	if g.changeQ != nil && room() {
		v := *g.changeQ
		g.changeQ = nil
		g.propose(g.next, v, 0)
		g.next++
	}
	// Commands queued ahead open slots at once, before the queue's, and
	// share them only among themselves. With no slot in flight nothing
	// waits for batchReady anyway: they lead the queue into one batch, so
	// that an idle group batches as before. Either way their slots are
	// urgent.
	urgentHead := 0 // commands at the head of the queue that were queued ahead
	headMark := g.aheadMark
	if len(g.inflight) == 0 {
		urgentHead = len(g.ahead)
		g.aheadIntoQueue()
	}
	for g.role == master && len(g.ahead) > 0 && room() {
		g.proposeBatch(&g.ahead, g.aheadMark)
	}
	if len(g.ahead) == 0 {
		g.ahead, g.aheadMark = nil, 0
	}
	for g.role == master && len(g.ahead) == 0 && len(g.pending) > 0 && g.batchReady() && room() {
		mark := slotMark(0)
		if urgentHead > 0 {
			mark = headMark
		}
		urgentHead -= g.proposeBatch(&g.pending, mark)
	}
	if len(g.pending) == 0 && len(g.ahead) == 0 {
		g.pending = nil
		g.queueTicks = 0
		// A change chosen but not yet in force waits for alpha more slots:
		// an idle master fills them with no-ops so that it completes.
		if last := g.ms.Epochs[len(g.ms.Epochs)-1].From; last > g.commit {
			for g.next < last && len(g.inflight) < c.Window && room() {
				g.propose(g.next, g.newValue(nil), 0)
				g.next++
			}
		}
	}
}

// aheadIntoQueue puts the commands queued ahead at the head of the queue.
func (g *group) aheadIntoQueue() {
	if len(g.ahead) > 0 {
		g.pending = append(g.ahead, g.pending...)
		g.ahead = nil
	}
}

// proposeBatch proposes the head of queue q, as much as one slot holds, in
// the next slot, and returns how many commands it took.
func (g *group) proposeBatch(q *[]Command, mark slotMark) int {
	c := &g.n.cfg
	n, bytes := 0, 0
	for n < len(*q) && n < c.MaxBatchCommands {
		sz := (*q)[n].size()
		if n > 0 && bytes+sz > c.MaxBatchBytes {
			break
		}
		bytes += sz
		n++
	}
	cmds := make([]Command, n)
	copy(cmds, (*q)[:n])
	*q = (*q)[n:]
	g.pendingBytes -= bytes
	v := g.newValue(cmds)
	g.mine[g.next] = v
	g.propose(g.next, v, mark)
	g.next++
	return n
}

// batchReady reports whether queued commands should go into a new slot now.
// A slot opens at once when none is in flight, when the queue fills a
// quarter of a batch, or when the queue has waited a tick (a slow link, F9).
// Otherwise the commands wait for the slot in flight to be chosen, so that
// they share the next slot and its fsyncs instead of each paying for its
// own: under light load this is as fast, and under load it batches (F3).
func (g *group) batchReady() bool {
	c := &g.n.cfg
	return len(g.inflight) == 0 || g.queueTicks > 0 ||
		len(g.pending) >= max(1, c.MaxBatchCommands/4) || g.pendingBytes >= c.MaxBatchBytes/4
}

// tick drives the group's timers.
func (g *group) tick() {
	c := &g.n.cfg
	switch g.role {
	case master:
		if len(g.pending)+len(g.ahead) > 0 {
			g.queueTicks++
			g.touch()
		}
		g.heartbeatElapsed++
		if g.heartbeatElapsed >= c.HeartbeatTicks {
			g.heartbeatElapsed = 0
			for _, to := range g.peers() {
				g.n.msgs = append(g.n.msgs, Message{Type: MsgCommit, Group: g.id, From: c.ID, To: to, Ballot: g.ballot, Commit: g.commit})
			}
			// Voters that did not answer a Prepare for a new configuration
			// are asked again.
			clear(g.asked)
			g.touch()
		}
		// Slot order, not map order: the core must be deterministic.
		for slot := g.commit; slot < g.next; slot++ {
			p, ok := g.inflight[slot]
			if !ok {
				continue
			}
			p.elapsed++
			if p.elapsed >= c.RetransmitTicks {
				p.elapsed = 0
				g.sendAccept(slot, p.value, append(slices.Clone(p.acks), g.n.cfg.ID), p.mark)
			}
		}
	case preparing:
		g.prepElapsed++
		if g.prepElapsed%c.RetransmitTicks == 0 {
			var to []NodeID
			for _, id := range g.allVoters() {
				if _, ok := g.promisers[id]; !ok && id != c.ID {
					to = append(to, id)
				}
			}
			g.sendPrepare(to, g.prepFrom)
		}
		g.electionElapsed++
		if g.electionElapsed >= g.electionTimeout {
			if c.AutoCampaign {
				g.role = follower
				g.campaign()
			} else {
				// Whoever asked for this campaign decides whether to try
				// again; retrying here with ever higher ballots would only
				// disrupt a live master once we are reachable again.
				g.stepDown(0)
			}
		}
	case follower:
		if c.Contend && len(g.pending) > 0 && !isVoter(g.ms.At(g.commit), c.ID) {
			// Removed while its commands waited: they go back to the caller.
			g.drop(g.pending)
			g.pending, g.pendingBytes = nil, 0
		}
		g.electionElapsed++
		if c.Contend && len(g.pending) > 0 {
			// A contending node proposes its own commands even while another
			// master is alive, so heartbeats do not hold it back.
			g.contendElapsed++
		}
		switch {
		case c.AutoCampaign && c.Contend && g.contendElapsed >= g.electionTimeout:
			g.campaign()
		case g.electionElapsed >= g.electionTimeout:
			g.leader = 0
			if c.AutoCampaign && !c.Contend {
				g.campaign()
			} else {
				g.resetElectionTimeout()
			}
		}
	}
	if g.fetching {
		g.fetchElapsed++
	}
	g.maybeFetch()
}
