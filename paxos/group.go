package paxos

import "slices"

// role is what a node currently is in one group.
type role uint8

const (
	follower role = iota
	preparing
	master
)

func (r role) String() string {
	switch r {
	case preparing:
		return "preparing"
	case master:
		return "master"
	}
	return "follower"
}

// proposal is a slot the master has in flight under its ballot.
type proposal struct {
	value   Value
	acks    []NodeID // nodes whose durable accept came back (voters or not)
	elapsed int      // ticks since the accepts were last sent
	mark    slotMark // how the slot's Accepts are marked (Message.Urgent, Message.Contended)
}

// slotMark says how a slot's Accepts are marked: hints to the runtimes that
// write it, never part of what is written or chosen.
type slotMark uint8

const (
	// markUrgent: the slot holds commands proposed ahead (Message.Urgent).
	markUrgent slotMark = 1 << iota
	// markContended: and at least one of them was proposed while its node
	// was busy with other clients' commands (Message.Contended).
	markContended
)

func hasNode(s []NodeID, id NodeID) bool {
	for _, x := range s {
		if x == id {
			return true
		}
	}
	return false
}

// group is the state of one Paxos group on this node. The node owns it; it is
// never touched by more than one goroutine.
type group struct {
	id GroupID
	n  *Node

	// Acceptor state. promised and commit are durable through HardState, the
	// entries through the log; see Node.Ready for when they are written.
	promised Ballot
	log      map[uint64]*Entry // every known entry with slot >= memFloor
	last     uint64            // one past the highest slot with an entry
	commit   uint64            // every slot below it is chosen and in log/storage
	memFloor uint64            // entries below it were dropped from memory (they are durable)

	// Output not yet handed out in a Ready.
	hardDirty bool
	// mustSync is set when a promise or an entry changed: replies may vouch
	// for them, so they must be synced. A change of the commit index alone
	// need not be: a lost commit index is learned again.
	mustSync bool
	unsaved  map[uint64]struct{}
	applied  uint64 // slots below it were handed out in Ready.Committed
	touched  bool   // on the node's dirty list

	// Proposer state.
	role     role
	ballot   Ballot // our ballot while preparing or master
	maxRound uint64 // highest round seen, so a new ballot outbids it
	// promisers maps each node that promised our ballot to the slot its
	// promise (and its report) starts at; it counts for the slots from
	// there on whose configuration lists it as a voter (membership.go).
	promisers   map[NodeID]uint64
	asked       map[NodeID]bool  // master: asked for a promise since the last heartbeat
	p1          map[uint64]Entry // phase-1 merge: best entry per slot not yet proposed
	p1top       uint64           // one past the highest slot any promise reported
	prepConf    []Member         // the configuration of prepFrom (for a mutation test)
	prepFrom    uint64
	prepElapsed int
	next        uint64 // master: next slot for a new value
	inflight    map[uint64]*proposal
	mine        map[uint64]Value // slots holding our own new commands, until known chosen
	pending     []Command
	// ahead: master only, commands queued with ProposeAhead; they go into
	// new slots before pending, without waiting for batchReady.
	// pendingBytes counts both queues.
	ahead        []Command
	aheadMark    slotMark // the marks of the commands in ahead, together
	pendingBytes int
	changeQ      *Value // master: a membership change waiting for a slot
	queueTicks   int    // ticks the queue has waited for a slot
	valueSeq     uint64

	// Failure detection.
	leader           NodeID // believed master, 0 if none
	electionElapsed  int
	electionTimeout  int
	contendElapsed   int // Config.Contend: ticks our queue waited while not master
	heartbeatElapsed int

	// snap is the newest snapshot slot: entries below it may be gone from
	// storage (see snapshot.go).
	snap uint64
	// untrusted: storage entries below it may hold values this node
	// accepted but never learned as chosen (it skipped them by installing a
	// snapshot, or restarted from one), so they are never read back as
	// chosen. Entries at or above it that are below memFloor are chosen.
	untrusted uint64
	// durable: every slot below it was handed out to apply in a Ready that
	// was advanced, so its chosen entry is in storage (see Advance).
	durable uint64

	// ms is the group's membership as of slot applied: every value handed
	// out to apply has been taken in (see membership.go).
	ms Membership
	// member is set once this node was seen in the group's membership, so
	// that a node waiting to join is not taken for a removed one.
	member bool
	// progress is the highest commit index heard from each node (how far a
	// learner has caught up).
	progress map[NodeID]uint64

	// Learning.
	knownCommit  uint64 // highest commit index heard of
	knownFrom    NodeID // who said so
	fetching     bool
	fetchElapsed int
}

func newGroup(n *Node, id GroupID) *group {
	g := &group{
		id:       id,
		n:        n,
		log:      map[uint64]*Entry{},
		unsaved:  map[uint64]struct{}{},
		inflight: map[uint64]*proposal{},
		mine:     map[uint64]Value{},
		progress: map[NodeID]uint64{},
		ms:       InitialMembership(n.cfg.Nodes),
	}
	g.resetElectionTimeout()
	return g
}

// rank is how far this node is from the group's preferred master: 0 for the
// preferred voter (group mod number of voters, in id order), then 1, 2, ...
// A node that is not a voter ranks last.
func (g *group) rank() int {
	voters := Voters(g.ms.At(g.commit))
	nodes := len(voters)
	self := slices.Index(voters, g.n.cfg.ID)
	if nodes == 0 || self < 0 {
		return nodes
	}
	pref := int(g.id) % nodes
	return (self - pref + nodes) % nodes
}

// confKnown returns config(s), the members governing slot s, if this node
// knows it: every slot up to s-alpha has been taken in (membership.go).
func (g *group) confKnown(s uint64) ([]Member, bool) {
	if s >= g.applied+g.n.cfg.delay() && g.n.cfg.mutate&mutNoChangeDelay == 0 {
		return nil, false
	}
	ms := g.ms.At(s)
	return ms, ms != nil
}

// peers returns every node of every epoch this node knows, but itself:
// whom a master sends its Accepts and heartbeats to.
func (g *group) peers() []NodeID {
	var out []NodeID
	for _, e := range g.ms.Epochs {
		for _, x := range e.Members {
			if x.ID != g.n.cfg.ID && !slices.Contains(out, x.ID) {
				out = append(out, x.ID)
			}
		}
	}
	return out
}

// allVoters returns every voter of every epoch this node knows.
func (g *group) allVoters() []NodeID {
	var out []NodeID
	for _, e := range g.ms.Epochs {
		for _, x := range e.Members {
			if x.Voter && !slices.Contains(out, x.ID) {
				out = append(out, x.ID)
			}
		}
	}
	return out
}

// majority reports whether the voters of ms among ids are a majority of
// the voters of ms.
func majority(ms []Member, ids []NodeID) bool {
	voters, yes := 0, 0
	for _, x := range ms {
		if x.Voter {
			voters++
			if hasNode(ids, x.ID) {
				yes++
			}
		}
	}
	return voters > 0 && yes >= voters/2+1
}

func (g *group) resetElectionTimeout() {
	c := &g.n.cfg
	g.electionElapsed = 0
	g.electionTimeout = c.ElectionTicks*(1+g.rank()) + c.Rand(c.ElectionTicks)
}

// touch puts the group on the node's list of groups with output.
func (g *group) touch() {
	if !g.touched {
		g.touched = true
		g.n.dirty = append(g.n.dirty, g)
	}
}

// setPromise raises the promise; it never lowers it (acceptor rule 1).
func (g *group) setPromise(b Ballot) {
	if g.promised.Less(b) {
		g.promised = b
		g.hardDirty = true
		g.mustSync = true
		g.touch()
	}
	g.seeRound(b)
}

func (g *group) seeRound(b Ballot) {
	if b.Round > g.maxRound {
		g.maxRound = b.Round
	}
}

// store records e as the group's entry for its slot and schedules it for
// writing.
func (g *group) store(e *Entry) {
	if e.Slot < g.memFloor {
		// Below the memory floor every slot is chosen and durable already.
		return
	}
	g.log[e.Slot] = e
	if e.Slot >= g.last {
		g.last = e.Slot + 1
	}
	g.unsaved[e.Slot] = struct{}{}
	g.mustSync = true
	g.touch()
}

// entry returns the entry for slot, from memory or, below the memory floor,
// from storage (where every such slot is chosen and durable).
func (g *group) entry(slot uint64) (*Entry, bool) {
	if slot >= g.memFloor {
		e, ok := g.log[slot]
		return e, ok
	}
	if slot < g.untrusted {
		return nil, false // in a snapshot: its value is not in our log
	}
	es, err := g.n.storage.Entries(g.id, slot, slot+1, 1)
	if err != nil || len(es) == 0 {
		g.n.storageErr(g.id, slot, err)
		return nil, false
	}
	e := es[0]
	e.Chosen = true
	return &e, true
}

// entries returns up to max entries from slot `from` on (below `to`), marking
// those below commit as chosen.
func (g *group) entries(from, to uint64, max int) []Entry {
	var out []Entry
	if from < g.untrusted {
		// What the store holds below it may not be the chosen values: the
		// caller sees those slots as missing (compacted into a snapshot).
		from = g.untrusted
	}
	if from < g.memFloor {
		end := min(to, g.memFloor)
		es, err := g.n.storage.Entries(g.id, from, end, max)
		if err != nil {
			g.n.storageErr(g.id, from, err)
			return nil
		}
		for i := range es {
			es[i].Chosen = true
		}
		out = append(out, es...)
		if len(out) >= max || uint64(len(es)) < end-from {
			// Stop at the first gap so that the reply stays contiguous.
			return out
		}
		from = g.memFloor
	}
	for s := from; s < to && s < g.last && len(out) < max; s++ {
		e, ok := g.log[s]
		if !ok {
			continue
		}
		c := *e
		if s < g.commit {
			c.Chosen = true
		}
		out = append(out, c)
	}
	return out
}
