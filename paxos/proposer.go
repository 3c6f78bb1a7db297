package paxos

import "slices"

// campaign starts phase 1 with a ballot above every ballot seen, for every
// slot from the commit index on.
func (g *group) campaign() {
	if g.role == master {
		return
	}
	round := max(g.maxRound, g.promised.Round) + 1
	g.ballot = Ballot{Round: round, Node: g.n.cfg.ID}
	g.role = preparing
	g.promisedBy = 0
	g.p1 = map[uint64]Entry{}
	g.prepFrom = g.commit
	g.prepElapsed = 0
	g.leader = 0
	g.inflight = map[uint64]*proposal{}
	g.contendElapsed = 0
	g.sendPrepare(0)
	g.resetElectionTimeout()
}

// sendPrepare sends Prepare to every node not in skip. Our own Prepare is
// handled at once; the Prepare to peers leaves only after the ballot (our own
// promise) is durable, so a restarted node never reuses it (rule 4).
func (g *group) sendPrepare(skip nodeSet) {
	for i, to := range g.n.cfg.Nodes {
		if skip.has(i) {
			continue
		}
		m := Message{Type: MsgPrepare, Group: g.id, From: g.n.cfg.ID, To: to, Ballot: g.ballot, Slot: g.prepFrom, Commit: g.commit}
		if i == g.n.self {
			g.onPrepare(&m)
			continue
		}
		g.n.after = append(g.n.after, m)
	}
	g.touch()
}

// onPromise merges a phase-1 reply for our current ballot.
func (g *group) onPromise(m *Message) {
	idx, ok := g.n.index[m.From]
	if g.role != preparing || m.Ballot != g.ballot || !ok || g.promisedBy.has(idx) {
		return
	}
	g.promisedBy.add(idx)
	if g.n.cfg.mutate&mutPhase2OwnValue == 0 {
		for _, e := range m.Entries {
			if e.Slot < g.prepFrom {
				continue
			}
			cur, ok := g.p1[e.Slot]
			if !ok || (e.Chosen && !cur.Chosen) || (!cur.Chosen && cur.Ballot.Less(e.Ballot)) {
				g.p1[e.Slot] = e
			}
		}
	}
	g.learnCommit(m.From, Ballot{}, m.Commit, false)
	if g.promisedBy.count() >= g.n.cfg.quorum() {
		g.becomeMaster()
	}
}

// becomeMaster ends phase 1: every slot from prepFrom up to the highest one
// reported gets the value of rule 5, and new commands go after it.
func (g *group) becomeMaster() {
	g.role = master
	g.leader = g.n.cfg.ID
	top := g.prepFrom
	for s := range g.p1 {
		if s+1 > top {
			top = s + 1
		}
	}
	g.next = max(top, g.commit)
	for s := g.commit; s < g.next; s++ {
		if e, ok := g.log[s]; ok && e.Chosen {
			continue
		}
		e, ok := g.p1[s]
		switch {
		case ok && e.Chosen:
			g.markChosen(s, e.Ballot, e.Value)
		case ok:
			g.propose(s, e.Value)
		default:
			g.propose(s, g.newValue(nil))
		}
	}
	g.p1 = nil
	g.heartbeatElapsed = 0
	g.touch()
}

func (g *group) newValue(cmds []Command) Value {
	g.valueSeq++
	return Value{ID: ValueID{Ballot: g.ballot, N: g.valueSeq}, Cmds: cmds}
}

// propose runs phase 2 for slot under our ballot. Our own accept is taken at
// once but counts only when its Accepted comes back after the sync.
func (g *group) propose(slot uint64, v Value) {
	g.inflight[slot] = &proposal{value: v}
	g.sendAccept(slot, v, 0)
}

func (g *group) sendAccept(slot uint64, v Value, skip nodeSet) {
	for i, to := range g.n.cfg.Nodes {
		if skip.has(i) {
			continue
		}
		m := Message{Type: MsgAccept, Group: g.id, From: g.n.cfg.ID, To: to, Ballot: g.ballot, Commit: g.commit,
			Entries: []Entry{{Slot: slot, Ballot: g.ballot, Value: v}}}
		if i == g.n.self {
			g.onAccept(&m)
			continue
		}
		// An Accept may leave before our own accept is durable: if we crash,
		// we never use this ballot again.
		g.n.msgs = append(g.n.msgs, m)
	}
	g.touch()
}

// onAccepted counts a phase-2 vote for our ballot.
func (g *group) onAccepted(m *Message) {
	if g.role != master || m.Ballot != g.ballot {
		return
	}
	p, ok := g.inflight[m.Slot]
	idx, known := g.n.index[m.From]
	if !ok || !known {
		return
	}
	p.acks.add(idx)
	if p.acks.count() >= g.n.cfg.quorum() {
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
	g.role = follower
	g.leader = hint
	g.inflight = map[uint64]*proposal{}
	g.p1 = nil
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
	for g.role == master && len(g.pending) > 0 && g.next-g.commit < uint64(c.Window) && g.batchReady() {
		n, bytes := 0, 0
		for n < len(g.pending) && n < c.MaxBatchCommands {
			sz := g.pending[n].size()
			if n > 0 && bytes+sz > c.MaxBatchBytes {
				break
			}
			bytes += sz
			n++
		}
		cmds := make([]Command, n)
		copy(cmds, g.pending[:n])
		g.pending = g.pending[n:]
		g.pendingBytes -= bytes
		v := g.newValue(cmds)
		g.mine[g.next] = v
		g.propose(g.next, v)
		g.next++
	}
	if len(g.pending) == 0 {
		g.pending = nil
		g.queueTicks = 0
	}
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
		if len(g.pending) > 0 {
			g.queueTicks++
			g.touch()
		}
		g.heartbeatElapsed++
		if g.heartbeatElapsed >= c.HeartbeatTicks {
			g.heartbeatElapsed = 0
			for i, to := range c.Nodes {
				if i != g.n.self {
					g.n.msgs = append(g.n.msgs, Message{Type: MsgCommit, Group: g.id, From: c.ID, To: to, Ballot: g.ballot, Commit: g.commit})
				}
			}
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
				skip := p.acks
				skip.add(g.n.self)
				g.sendAccept(slot, p.value, skip)
			}
		}
	case preparing:
		g.prepElapsed++
		if g.prepElapsed%c.RetransmitTicks == 0 {
			skip := g.promisedBy
			skip.add(g.n.self)
			g.sendPrepare(skip)
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
