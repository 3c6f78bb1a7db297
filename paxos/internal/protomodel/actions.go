package protomodel

import (
	"fmt"
	"math/bits"
	"strings"
)

// ActionKind names a transition of the model.
type ActionKind uint8

// The transitions. Each is enabled by the state alone: a message that was
// ever sent may be received at any time, any number of times.
const (
	// ActCampaign: a node starts phase 1 of one of its ballots, from its
	// commit index on, and answers its own Prepare at once.
	ActCampaign ActionKind = iota
	// ActPromise: an acceptor receives Prepare(b) with b >= its promise and
	// answers with a Promise (rules 1 and 3).
	ActPromise
	// ActBecomeMaster: a proposer counts Promises from a majority and runs
	// rule 5 for every slot from its commit index to the highest one reported.
	ActBecomeMaster
	// ActPropose: a master proposes a fresh value at its next free slot.
	ActPropose
	// ActAccept: an acceptor receives Accept(b, s, v) (rule 2).
	ActAccept
	// ActChoose: a master counts Accepted from a majority for a slot it
	// proposed under its current ballot and marks the value chosen.
	ActChoose
	// ActStepDown: a proposer receives a Nack carrying a promise above its
	// ballot and steps down.
	ActStepDown
	// ActSendCommit: a master announces its commit index under its ballot
	// (a heartbeat, or the commit index an Accept carries).
	ActSendCommit
	// ActLearnCommit: a node receives Commit(b, c) and learns by ballot.
	ActLearnCommit
	// ActFetchReply: a node receives a FetchReply with the chosen entries of
	// a peer below some commit index the peer had.
	ActFetchReply
)

// Action is one transition, for traces.
type Action struct {
	Kind   ActionKind
	Node   int // the node that acts (receives, campaigns, counts)
	Peer   int // ActFetchReply: the node that answered
	Ballot int
	Slot   int
	Commit int
	// Promises are the Promises an ActBecomeMaster counted.
	Promises []promise
}

// successors calls emit for every transition enabled in st, with the state it
// leads to in t (a scratch state, overwritten by the next transition). The
// order is deterministic.
func (c *Config) successors(st *State, t *State, emit func(a Action)) {
	emit0 := emit
	emit = func(a Action) {
		c.forget(t)
		emit0(a)
	}
	nb := len(c.Owners)
	for b := 1; b <= nb; b++ {
		p := &st.props[b-1]
		i := c.Owners[b-1]
		switch p.Phase {
		case phaseIdle:
			if c.master(st, i) == 0 && int(st.nodes[i].Promised) < b {
				*t = *st
				if a := c.active(t, i); a != 0 {
					t.props[a-1].Phase = phaseDone
				}
				t.props[b-1] = prop{Phase: phasePreparing, From: t.nodes[i].Commit}
				c.promiseAt(t, i, b)
				emit(Action{Kind: ActCampaign, Node: i, Ballot: b})
			}
			continue
		case phasePreparing:
			c.becomeMasterSuccessors(st, b, t, emit)
		case phaseMaster:
			// The next free slot; a master whose commit index has passed it
			// (through a FetchReply) goes on from its commit index.
			if s := max(int(p.Next), int(st.nodes[i].Commit)); s < c.Slots {
				*t = *st
				t.props[b-1].Next = uint8(s + 1)
				c.propose(t, b, s, c.value(b, s))
				emit(Action{Kind: ActPropose, Node: i, Ballot: b, Slot: s})
			}
			c.chooseSuccessors(st, b, t, emit)
			if cm := int(st.nodes[i].Commit); cm > 0 && st.commits&c.commitBit(b, cm) == 0 {
				*t = *st
				t.commits |= c.commitBit(b, cm)
				emit(Action{Kind: ActSendCommit, Node: i, Ballot: b, Commit: cm})
			}
		}
		if p.Phase == phasePreparing || p.Phase == phaseMaster {
			for a := 0; a < c.Nodes; a++ {
				if int(st.nodes[a].Promised) > b {
					*t = *st
					t.props[b-1].Phase = phaseDone
					emit(Action{Kind: ActStepDown, Node: i, Peer: a, Ballot: b})
					break
				}
			}
		}
		// Prepare(b) and the Accepts of b stay in the network for good.
		for a := 0; a < c.Nodes; a++ {
			if a == i || int(st.nodes[a].Promised) > b {
				continue
			}
			*t = *st
			c.promiseAt(t, a, b)
			emit(Action{Kind: ActPromise, Node: a, Ballot: b})
		}
		for s := 0; s < c.Slots; s++ {
			if p.Val[s] == 0 {
				continue
			}
			for a := 0; a < c.Nodes; a++ {
				if a == i {
					continue // a master takes its own accept at once
				}
				*t = *st
				if c.acceptAt(t, a, b, s) {
					emit(Action{Kind: ActAccept, Node: a, Ballot: b, Slot: s})
				}
			}
		}
	}
	// Commit(b, c) messages ever sent.
	for b := 1; b <= nb; b++ {
		for cm := 1; cm <= c.Slots; cm++ {
			if st.commits&c.commitBit(b, cm) == 0 {
				continue
			}
			for i := 0; i < c.Nodes; i++ {
				if i == c.Owners[b-1] {
					continue
				}
				*t = *st
				c.learnCommit(t, i, b, cm)
				emit(Action{Kind: ActLearnCommit, Node: i, Ballot: b, Commit: cm})
			}
		}
	}
	// A FetchReply from j covers j's chosen entries below a commit index j
	// had; the Fetch that asked for it is modelled as always outstanding.
	for j := 0; j < c.Nodes; j++ {
		for cm := 1; cm <= int(st.nodes[j].Commit); cm++ {
			for i := 0; i < c.Nodes; i++ {
				if i == j || int(st.nodes[i].Commit) >= cm {
					continue
				}
				*t = *st
				for s := 0; s < cm; s++ {
					e := st.nodes[j].Log[s]
					c.markChosen(t, i, s, e.B, e.V, true)
				}
				emit(Action{Kind: ActFetchReply, Node: i, Peer: j, Commit: cm})
			}
		}
	}
}

// becomeMasterSuccessors enumerates every way the proposer of b can count a
// majority of Promises: any majority of the acceptors that answered, and for
// each of them any one of its Promises for b (a Prepare received twice may
// have been answered twice, with different entries).
func (c *Config) becomeMasterSuccessors(st *State, b int, t *State, emit func(a Action)) {
	var by [MaxNodes][]int
	var answered uint
	for k := range st.promises {
		p := &st.promises[k]
		if int(p.B) == b {
			by[p.A] = append(by[p.A], k)
			answered |= 1 << p.A
		}
	}
	q := c.quorum()
	if bits.OnesCount(answered) < q {
		return
	}
	for set := uint(0); set < 1<<c.Nodes; set++ {
		if set&answered != set || bits.OnesCount(set) != q {
			continue
		}
		var members []int
		for a := 0; a < c.Nodes; a++ {
			if set&(1<<a) != 0 {
				members = append(members, a)
			}
		}
		pick := make([]int, len(members))
		for {
			picked := make([]promise, len(members))
			for k, a := range members {
				picked[k] = st.promises[by[a][pick[k]]]
			}
			*t = *st
			c.becomeMaster(t, b, picked)
			emit(Action{Kind: ActBecomeMaster, Node: c.Owners[b-1], Ballot: b, Promises: picked})
			// Next combination of picks.
			k := 0
			for ; k < len(members); k++ {
				pick[k]++
				if pick[k] < len(by[members[k]]) {
					break
				}
				pick[k] = 0
			}
			if k == len(members) {
				break
			}
		}
	}
}

// chooseSuccessors lets the master of b count a majority of Accepted for any
// slot it proposed under b and does not yet know chosen.
func (c *Config) chooseSuccessors(st *State, b int, t *State, emit func(a Action)) {
	i := c.Owners[b-1]
	n := &st.nodes[i]
	for s := 0; s < c.Slots; s++ {
		v := st.props[b-1].Val[s]
		if v == 0 || s < int(n.Commit) || n.Log[s].Chosen {
			continue
		}
		count := 0
		for a := 0; a < c.Nodes; a++ {
			acked := st.acks&c.voteBit(a, b, s) != 0
			if c.Faults&FaultCountEarlierBallot != 0 {
				for e := 1; e < b; e++ {
					if c.Owners[e-1] == i && st.acks&c.voteBit(a, e, s) != 0 {
						acked = true
					}
				}
			}
			if acked {
				count++
			}
		}
		if count >= c.quorum() {
			*t = *st
			c.markChosen(t, i, s, uint8(b), v, false)
			emit(Action{Kind: ActChoose, Node: i, Ballot: b, Slot: s})
		}
	}
}

// forget drops messages that can no longer change anything, so that states
// differing only in them are one state: Promises for a ballot that is no
// longer preparing, and Accepted for a ballot that is no longer master
// (unless FaultCountEarlierBallot counts them later). Votes stay: they are
// the ground truth.
func (c *Config) forget(t *State) {
	drop := false
	for k := range t.promises {
		if t.props[t.promises[k].B-1].Phase != phasePreparing {
			drop = true
			break
		}
	}
	if drop {
		var ps []promise
		for k := range t.promises {
			if t.props[t.promises[k].B-1].Phase == phasePreparing {
				ps = append(ps, t.promises[k])
			}
		}
		t.promises = ps
	}
	if c.Faults&FaultCountEarlierBallot != 0 {
		return
	}
	for b := 1; b <= len(c.Owners); b++ {
		if t.props[b-1].Phase == phaseMaster {
			continue
		}
		for a := 0; a < c.Nodes; a++ {
			for s := 0; s < c.Slots; s++ {
				t.acks &^= c.voteBit(a, b, s)
			}
		}
	}
}

// promiseAt makes acceptor a promise ballot b (rules 1 and 3).
func (c *Config) promiseAt(t *State, a, b int) {
	n := &t.nodes[a]
	if int(n.Promised) < b {
		n.Promised = uint8(b)
	}
	c.observe(t, a, b)
	p := promise{A: uint8(a), B: uint8(b)}
	for s := int(t.props[b-1].From); s < c.Slots; s++ {
		p.Log[s] = n.Log[s]
	}
	t.addPromise(p)
}

// observe steps down the proposer of node a if it sees a higher ballot b in
// a request (observeBallot in the core).
func (c *Config) observe(t *State, a, b int) {
	if pb := c.active(t, a); pb != 0 && pb < b {
		t.props[pb-1].Phase = phaseDone
	}
}

// becomeMaster ends phase 1 of ballot b with the counted promises (rule 5).
func (c *Config) becomeMaster(t *State, b int, picked []promise) {
	p := &t.props[b-1]
	i := c.Owners[b-1]
	p.Phase = phaseMaster
	var p1 [MaxSlots]Entry
	if c.Faults&FaultPhase2OwnValue == 0 {
		for k := range picked {
			for s := int(p.From); s < c.Slots; s++ {
				e, cur := picked[k].Log[s], p1[s]
				if e.V == 0 {
					continue
				}
				if cur.V == 0 || (e.Chosen && !cur.Chosen) || (!cur.Chosen && cur.B < e.B) {
					p1[s] = e
				}
			}
		}
	}
	top := int(p.From)
	for s := 0; s < c.Slots; s++ {
		if p1[s].V != 0 && s+1 > top {
			top = s + 1
		}
	}
	next := max(top, int(t.nodes[i].Commit))
	p.Next = uint8(next)
	for s := int(t.nodes[i].Commit); s < next; s++ {
		e := p1[s]
		switch {
		case t.nodes[i].Log[s].Chosen:
		case e.Chosen:
			c.markChosen(t, i, s, e.B, e.V, false)
		case e.V != 0:
			c.propose(t, b, s, e.V)
		default:
			c.propose(t, b, s, c.value(b, s))
		}
	}
}

// propose records that ballot b proposes v at slot s (its Accept is then in
// the network for good) and lets its own acceptor take it at once.
func (c *Config) propose(t *State, b, s int, v uint8) {
	t.props[b-1].Val[s] = v
	c.acceptAt(t, c.Owners[b-1], b, s)
}

// acceptAt delivers Accept(b, s, v) to acceptor a (rule 2). It reports false
// if the acceptor refuses it (a Nack, which changes nothing in the model).
func (c *Config) acceptAt(t *State, a, b, s int) bool {
	n := &t.nodes[a]
	v := t.props[b-1].Val[s]
	if b < int(n.Promised) && c.Faults&FaultAcceptIgnoresPromise == 0 {
		return false
	}
	if c.Faults&FaultAcceptNoRaise == 0 && int(n.Promised) < b {
		n.Promised = uint8(b)
	}
	c.observe(t, a, b)
	e := n.Log[s]
	bit := c.voteBit(a, b, s)
	switch {
	case s >= int(n.Commit) && !e.Chosen:
		n.Log[s] = Entry{B: uint8(b), V: v}
		t.votes |= bit
		t.acks |= bit
	case c.Faults&FaultAckChosen != 0 || e.V == v:
		// The slot is known chosen: acknowledging its own value again is
		// harmless and lets a master finish.
		t.acks |= bit
	}
	return true
}

// learnCommit delivers Commit(b, cm) to node i: every slot below cm is chosen,
// and an entry i accepted under b is taken as the chosen value (learning by
// ballot). At the first slot it cannot take, it stops (it would fetch).
func (c *Config) learnCommit(t *State, i, b, cm int) {
	n := &t.nodes[i]
	if b >= int(n.Promised) {
		c.observe(t, i, b)
	}
	for int(n.Commit) < cm {
		e := n.Log[n.Commit]
		if e.V == 0 || !(e.Chosen || int(e.B) == b) {
			break
		}
		c.markChosen(t, i, int(n.Commit), e.B, e.V, false)
	}
}

// markChosen is the one place where node i learns that slot s chose v (held
// under ballot b as far as it knows). It applies the configured Rule when i
// is a master.
func (c *Config) markChosen(t *State, i, s int, b, v uint8, fetched bool) {
	n := &t.nodes[i]
	if s < int(n.Commit) {
		return
	}
	if n.Log[s].V != v {
		n.Log[s] = Entry{B: b, V: v, Chosen: true}
	} else {
		n.Log[s].Chosen = true
	}
	if mb := c.master(t, i); mb != 0 {
		switch c.Rule {
		case RuleNew:
			if pv := t.props[mb-1].Val[s]; pv != 0 && pv != v {
				t.props[mb-1].Phase = phaseDone
			}
		case RuleBallotCompare:
			if fetched && int(b) > mb {
				t.props[mb-1].Phase = phaseDone
			}
		}
	}
	if s == int(n.Commit) {
		for int(n.Commit) < c.Slots && n.Log[n.Commit].Chosen {
			n.Commit++
		}
	}
}

// describeAction prints a transition taken from st to t.
func (c *Config) describeAction(a *Action, st, t *State) string {
	bn := ""
	if a.Ballot != 0 {
		bn = c.ballotName(uint8(a.Ballot))
	}
	who := nodeName(a.Node)
	var s string
	switch a.Kind {
	case ActCampaign:
		s = fmt.Sprintf("%s campaigns with %s from slot %d", who, bn, t.props[a.Ballot-1].From)
	case ActPromise:
		p := promise{A: uint8(a.Node), B: uint8(a.Ballot)}
		for k := int(t.props[a.Ballot-1].From); k < c.Slots; k++ {
			p.Log[k] = t.nodes[a.Node].Log[k]
		}
		s = fmt.Sprintf("%s receives Prepare %s, promises with %s", who, bn, c.promiseEntries(&p, int(t.props[a.Ballot-1].From)))
	case ActBecomeMaster:
		var from []string
		for k := range a.Promises {
			from = append(from, fmt.Sprintf("%s{%s}", nodeName(int(a.Promises[k].A)), c.promiseEntries(&a.Promises[k], int(t.props[a.Ballot-1].From))))
		}
		var props []string
		for k := 0; k < c.Slots; k++ {
			if v := t.props[a.Ballot-1].Val[k]; v != 0 {
				props = append(props, fmt.Sprintf("%d=%s", k, c.valueName(v)))
			}
		}
		s = fmt.Sprintf("%s becomes master at %s with promises %s; proposes [%s]", who, bn, strings.Join(from, " "), strings.Join(props, " "))
	case ActPropose:
		s = fmt.Sprintf("%s proposes %s at slot %d under %s", who, c.valueName(t.props[a.Ballot-1].Val[a.Slot]), a.Slot, bn)
	case ActAccept:
		v := c.valueName(t.props[a.Ballot-1].Val[a.Slot])
		if t.votes&c.voteBit(a.Node, a.Ballot, a.Slot) != st.votes&c.voteBit(a.Node, a.Ballot, a.Slot) {
			s = fmt.Sprintf("%s receives Accept(%s, slot %d, %s): accepts", who, bn, a.Slot, v)
		} else {
			s = fmt.Sprintf("%s receives Accept(%s, slot %d, %s): slot known chosen, no vote", who, bn, a.Slot, v)
		}
	case ActChoose:
		s = fmt.Sprintf("%s counts a majority of Accepted for slot %d under %s: %s chosen", who, a.Slot, bn, c.valueName(t.props[a.Ballot-1].Val[a.Slot]))
	case ActStepDown:
		s = fmt.Sprintf("%s gets a Nack from %s (promised b%d) and steps down from %s", who, nodeName(a.Peer), st.nodes[a.Peer].Promised, bn)
	case ActSendCommit:
		s = fmt.Sprintf("%s, master at %s, sends Commit(%s, %d)", who, bn, bn, a.Commit)
	case ActLearnCommit:
		s = fmt.Sprintf("%s receives Commit(%s, %d)", who, bn, a.Commit)
	case ActFetchReply:
		s = fmt.Sprintf("%s receives FetchReply from %s with chosen slots below %d", who, nodeName(a.Peer), a.Commit)
	default:
		s = fmt.Sprintf("action %d", a.Kind)
	}
	return s + c.effects(st, t)
}

func (c *Config) promiseEntries(p *promise, from int) string {
	var es []string
	for k := from; k < c.Slots; k++ {
		e := p.Log[k]
		mark := ""
		if e.Chosen {
			mark = "*"
		}
		es = append(es, fmt.Sprintf("%d:%s@b%d%s", k, c.valueName(e.V), e.B, mark))
	}
	return strings.Join(es, " ")
}

// effects lists the learning and role changes between st and t.
func (c *Config) effects(st, t *State) string {
	var out []string
	for i := 0; i < c.Nodes; i++ {
		for s := 0; s < c.Slots; s++ {
			if e := t.nodes[i].Log[s]; e.Chosen && !st.nodes[i].Log[s].Chosen {
				out = append(out, fmt.Sprintf("%s marks slot %d = %s chosen", nodeName(i), s, c.valueName(e.V)))
			}
		}
		if x, y := st.nodes[i].Commit, t.nodes[i].Commit; x != y {
			out = append(out, fmt.Sprintf("%s commit %d->%d", nodeName(i), x, y))
		}
	}
	for b := 1; b <= len(c.Owners); b++ {
		if st.props[b-1].Phase == phaseMaster || st.props[b-1].Phase == phasePreparing {
			if t.props[b-1].Phase == phaseDone {
				out = append(out, fmt.Sprintf("%s steps down from %s", nodeName(c.Owners[b-1]), c.ballotName(uint8(b))))
			}
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " => " + strings.Join(out, ", ")
}
