package paxos

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
	acks    nodeSet
	elapsed int // ticks since the accepts were last sent
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
	role         role
	ballot       Ballot // our ballot while preparing or master
	maxRound     uint64 // highest round seen, so a new ballot outbids it
	promisedBy   nodeSet
	p1           map[uint64]Entry // phase-1 merge: best entry per slot
	prepFrom     uint64
	prepElapsed  int
	next         uint64 // master: next slot for a new value
	inflight     map[uint64]*proposal
	mine         map[uint64]Value // slots holding our own new commands, until known chosen
	pending      []Command
	pendingBytes int
	queueTicks   int // ticks the queue has waited for a slot
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
	}
	g.resetElectionTimeout()
	return g
}

// rank is how far this node is from the group's preferred master: 0 for the
// preferred node (group mod number of nodes), then 1, 2, ...
func (g *group) rank() int {
	nodes := len(g.n.cfg.Nodes)
	pref := int(g.id) % nodes
	return (g.n.self - pref + nodes) % nodes
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
