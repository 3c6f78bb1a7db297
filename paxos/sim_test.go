package paxos

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"math/rand"
)

// simConfig is one shape of cluster and fault mix for the simulator.
type simConfig struct {
	name      string
	nodes     int
	groups    int
	window    int
	contend   bool // proposers on every node, no stable master
	clients   int
	perClient int     // commands each client must get chosen
	loss      float64 // per message, while faults are on
	dup       float64
	maxDelay  int64   // time units; one tick is 10 units
	crash     float64 // per node per tick, while faults are on
	crashMid  float64 // per Ready: crash after sending, before the sync
	partition float64 // per tick: cut a random pair of nodes for a while
	hold      float64 // per message: hold it back for a long time (across elections)
	// topology is, per tick, the chance that the network takes a new shape
	// for a while: two sides, or two sides with a bridge node that reaches
	// both (Jepsen's partitions). A master cut off with a bridge keeps
	// talking to it while the other side elects and chooses: the shape in
	// which a stale master learns a slot chosen by a higher ballot.
	topology float64
	// stale is, per tick, the chance that an adversary isolates a group's
	// master with one peer, its bridge, for a while: the master and the
	// bridge hear each other only, except that the bridge still hears the
	// other side's heartbeats and fetch replies (messages without a ballot
	// to outbid the master with). The other side elects a new master and
	// chooses slots the old master proposed in; the bridge learns them and
	// tells the old master, in replies that carry no ballot. A network can
	// lose exactly these messages; random loss almost never does.
	stale float64
	// snapEvery is how many applied slots a node lets pass before it
	// snapshots a group and compacts its log (keeping snapMargin slots); -1
	// turns snapshots off. Nodes that fall behind then need a snapshot.
	snapEvery  int
	snapMargin uint64
	faultTime  int64 // time units with faults on; then the network heals
	maxTime    int64 // liveness bound: everything must be done by then
	mutate     mutation
	// members turns on the membership workload: spare more nodes run from
	// the start outside every group, and an operator adds learners,
	// promotes them and removes voters (any node, the master too) at a
	// rate of members per tick per group while the faults are on.
	// alpha is ChangeDelay for the run (0: drawn from the seed, between 1
	// and twice the window, so that a master's pipeline meets it).
	members float64
	spare   int
	alpha   uint64
}

// simConfigs are the shapes every seed cycles through; seed s runs
// simConfigs[s % len(simConfigs)].
var simConfigs = []simConfig{
	{name: "n3g1w8", nodes: 3, groups: 1, window: 8},
	{name: "n3g4w4", nodes: 3, groups: 4, window: 4},
	{name: "n5g3w8", nodes: 5, groups: 3, window: 8},
	{name: "n3g2w1", nodes: 3, groups: 2, window: 1},
	{name: "n3g1contend", nodes: 3, groups: 1, window: 4, contend: true},
	{name: "n5g2contend", nodes: 5, groups: 2, window: 2, contend: true},
	{name: "n5g1w16", nodes: 5, groups: 1, window: 16},
	{name: "n3g8w2", nodes: 3, groups: 8, window: 2},
	harshContention,
	staleMaster,
	membersPlain,
	{name: "n5g1w8-members", nodes: 5, groups: 1, window: 8, members: 0.02, spare: 2},
	{name: "n3g1contend-members", nodes: 3, groups: 1, window: 4, contend: true, members: 0.02, spare: 2},
	membersStale,
}

// membersPlain adds, promotes and removes nodes of a 3-node cluster.
var membersPlain = simConfig{name: "n3g2w4-members", nodes: 3, groups: 2, window: 4, members: 0.02, spare: 2}

// membersStale runs membership changes against the stale-master adversary:
// old masters keep proposing while changes are chosen around them.
var membersStale = simConfig{name: "n3g1contend-members-stale", nodes: 3, groups: 1, window: 4, contend: true, stale: 0.05, members: 0.03, spare: 2}

// staleMaster runs the stale-master adversary (simConfig.stale) against
// proposers on every node, whose queued commands keep an isolated master
// proposing: the shape in which a master learns, from a reply without a
// ballot, that a slot it proposed in chose another value.
var staleMaster = simConfig{name: "n5g1contend-stale", nodes: 5, groups: 1, window: 4, contend: true, stale: 0.05}

// harshContention has proposers on five nodes, long delays and heavy loss, so
// that accepts overtake prepares and old masters keep talking: the shape in
// which an accept that does not raise the promise goes wrong.
var harshContention = simConfig{name: "n5g1contend-harsh", nodes: 5, groups: 1, window: 8, contend: true,
	maxDelay: 150, loss: 0.3, crash: 0.0001, crashMid: 0.0001, perClient: 10}

// withFaults fills in the fault mix. Unset rates are drawn from the seed, so
// that the seeds of one configuration cover mild and harsh networks alike.
func (c simConfig) withFaults(rng *rand.Rand) simConfig {
	def := func(v *float64, choices ...float64) {
		if *v == 0 {
			*v = choices[rng.Intn(len(choices))]
		}
	}
	if c.clients == 0 {
		c.clients = 2 * c.nodes
	}
	if c.perClient == 0 {
		c.perClient = 25
	}
	def(&c.loss, 0.001, 0.05, 0.2)
	def(&c.dup, 0.001, 0.05, 0.1)
	def(&c.crash, 0.0005, 0.002, 0.005)
	def(&c.crashMid, 0.001, 0.01, 0.03)
	def(&c.partition, 0.001, 0.01, 0.03)
	if c.maxDelay == 0 {
		c.maxDelay = []int64{5, 25, 60}[rng.Intn(3)]
	}
	if c.snapEvery == 0 {
		c.snapEvery = []int{-1, -1, 3, 12}[rng.Intn(4)]
		c.snapMargin = uint64(rng.Intn(4))
	}
	if c.faultTime == 0 {
		c.faultTime = 8000
	}
	if c.members > 0 && c.alpha == 0 {
		c.alpha = uint64(1 + rng.Intn(2*c.window))
	}
	if c.maxTime == 0 {
		c.maxTime = c.faultTime + 40000
	}
	return c
}

const tickEvery = 10 // time units per tick

type simMsg struct {
	at  int64
	seq uint64
	m   Message
}

type msgQueue []simMsg

func (q msgQueue) Len() int { return len(q) }
func (q msgQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q msgQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *msgQueue) Push(x any)   { *q = append(*q, x.(simMsg)) }
func (q *msgQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type simNode struct {
	id       NodeID
	core     *Node // nil while crashed
	store    *MemoryStorage
	rng      *rand.Rand
	appliers map[GroupID]*Applier
	snapped  map[GroupID]uint64 // slot of the newest snapshot taken or installed
	// incarnation counts starts, so that a transfer for a crashed node's
	// earlier life is not installed into the new one.
	incarnation  int
	transferring map[GroupID]bool
	next         map[GroupID]uint64 // next slot to apply, per group
	waiters      map[CommandID]*simClient
	ms           map[GroupID]*Membership // as of next, per group (kept in snapshots)
	upAt         int64                   // restart time while crashed
	// pipelined nodes persist in the background like paxos/replica: queue
	// holds Readys handed out but not yet written.
	pipelined bool
	queue     []Ready
}

type simClient struct {
	id       uint64
	group    GroupID
	home     int // node index it starts with (and sticks to when contending)
	target   int
	seq      uint64
	waiting  bool
	deadline int64
	retryAt  int64
	done     int
}

// sim is one seeded run.
type sim struct {
	cfg     simConfig
	seed    int64
	rng     *rand.Rand
	now     int64
	nodes   []*simNode
	ids     []NodeID
	net     msgQueue
	msgSeq  uint64
	cut     map[[2]NodeID]int64 // one-way cuts and when they heal
	snaps   []simTransfer       // snapshot transfers in flight
	adv     staleAdversary
	clients []*simClient
	check   *checker
	err     error
	steps   int
	trace   func(string) // set by -sim.trace
}

func newSim(seed int64, cfg simConfig) *sim {
	rng := rand.New(rand.NewSource(seed))
	cfg = cfg.withFaults(rng)
	s := &sim{cfg: cfg, seed: seed, rng: rng, cut: map[[2]NodeID]int64{}}
	for i := 0; i < cfg.nodes+cfg.spare; i++ {
		s.ids = append(s.ids, NodeID(i+1))
	}
	s.check = newChecker(s)
	for i := range s.ids {
		sn := &simNode{id: s.ids[i], store: NewMemoryStorage(), rng: rand.New(rand.NewSource(seed*131 + int64(i))), pipelined: rng.Intn(2) == 0}
		s.nodes = append(s.nodes, sn)
		s.start(sn)
	}
	for i := 0; i < cfg.clients; i++ {
		home := i % cfg.nodes
		s.clients = append(s.clients, &simClient{id: uint64(i + 1), group: GroupID(s.rng.Intn(cfg.groups)), home: home, target: home})
	}
	return s
}

func (s *sim) coreConfig(sn *simNode) Config {
	return Config{
		ID: sn.id, Nodes: s.ids[:s.cfg.nodes], Groups: s.cfg.groups, Window: s.cfg.window,
		MaxBatchCommands: 3, ElectionTicks: 8, HeartbeatTicks: 2, RetransmitTicks: 3,
		AutoCampaign: true, Contend: s.cfg.contend, MaxFetchEntries: 16,
		Rand: sn.rng.Intn, mutate: s.cfg.mutate, changeDelay: s.cfg.alpha,
		SnapshotMembership: func(g GroupID) (Membership, error) {
			_, data, _ := sn.store.LoadSnapshot(g)
			_, _, ms, err := decodeSimSnapshot(data)
			return ms, err
		},
	}
}

// start (re)builds a node's core from its durable storage.
func (s *sim) start(sn *simNode) {
	c, err := New(s.coreConfig(sn), sn.store)
	if err != nil {
		s.fail("node %d: restart: %v", sn.id, err)
		return
	}
	// Keep little in memory and apply in small batches, so that reads of
	// durable entries (fetch, promise, replay) are exercised too.
	c.keepInMemory = uint64(1 + s.rng.Intn(8))
	c.maxApplyPerReady = 1 + s.rng.Intn(6)
	c.quorumHook = func(g GroupID, slot uint64, phase int, b Ballot, voters []NodeID) {
		if err := s.check.truth.quorum(sn.id, g, slot, phase, b, voters); err != nil {
			s.fail("%v", err)
		}
	}
	sn.core = c
	sn.appliers = map[GroupID]*Applier{}
	sn.ms = map[GroupID]*Membership{}
	sn.next = map[GroupID]uint64{}
	sn.snapped = map[GroupID]uint64{}
	sn.transferring = map[GroupID]bool{}
	sn.incarnation++
	for g := range GroupID(s.cfg.groups) {
		slot, data, _ := sn.store.LoadSnapshot(g)
		if slot == 0 {
			continue
		}
		if err := s.restoreSnapshot(sn, g, slot, data); err != nil {
			s.fail("node %d: restart: %v", sn.id, err)
			return
		}
	}
	sn.waiters = map[CommandID]*simClient{}
}

func (s *sim) crash(sn *simNode) {
	sn.core = nil
	sn.queue = nil
	sn.store.Crash()
	sn.upAt = s.now + int64(20+s.rng.Intn(400))
	for _, cl := range s.clients {
		if cl.waiting && s.nodes[cl.target] == sn {
			// The client's call dies with the node: outcome unknown.
			cl.deadline = s.now
		}
	}
}

func (s *sim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("t=%d: %s", s.now, fmt.Sprintf(format, args...))
	}
}

func (s *sim) tracef(format string, args ...any) {
	if s.trace != nil {
		s.trace(fmt.Sprintf("t=%d ", s.now) + fmt.Sprintf(format, args...))
	}
}

func (s *sim) faulty() bool { return s.now < s.cfg.faultTime }

func (s *sim) send(m Message) {
	if s.faulty() {
		if s.adv.drops(s.now, m) {
			return
		}
		if until, ok := s.cut[[2]NodeID{m.From, m.To}]; ok && until > s.now {
			return
		}
		if s.rng.Float64() < s.cfg.loss {
			return
		}
		if s.rng.Float64() < s.cfg.dup {
			s.enqueue(m)
		}
	}
	s.enqueue(m)
}

func (s *sim) enqueue(m Message) {
	s.msgSeq++
	at := s.now + 1 + s.rng.Int63n(s.cfg.maxDelay)
	if s.faulty() && s.cfg.hold > 0 && s.rng.Float64() < s.cfg.hold {
		at += 200 + s.rng.Int63n(2000)
	}
	heap.Push(&s.net, simMsg{at: at, seq: s.msgSeq, m: m})
}

// process runs a node's Ready loop the way paxos/replica does: messages go
// out and chosen slots are applied at once, and writes queue for a persister.
// A node that persists in the background (pipelined) writes its queue only
// now and then, in one batch, as the replica's persister does; the others
// write every Ready at once. A crash may strike before a write is synced.
func (s *sim) process(sn *simNode) {
	for i := 0; i < 1000 && sn.core != nil && sn.core.HasReady() && s.err == nil; i++ {
		r := sn.core.Ready()
		if s.trace != nil {
			for _, w := range r.Persist {
				s.tracef("n%d persist g%d hard=%v entries=%v", sn.id, w.Group, w.Hard, entriesString(w.Entries))
			}
			for _, m := range r.Messages {
				s.tracef("n%d send %s %s", sn.id, m.String(), entriesString(m.Entries))
			}
			for _, m := range r.AfterSync {
				s.tracef("n%d send-after-sync %s %s", sn.id, m.String(), entriesString(m.Entries))
			}
		}
		for _, m := range r.Messages {
			s.check.sent(m)
			s.send(m)
		}
		for _, e := range r.StorageErrors {
			s.fail("node %d: %v", sn.id, e)
		}
		for _, a := range r.Committed {
			s.apply(sn, a)
		}
		for _, d := range r.Dropped {
			if cl, ok := sn.waiters[d.ID]; ok {
				delete(sn.waiters, d.ID)
				if d.ID.Seq == cl.seq {
					s.redirect(cl, d.Err)
				}
			}
		}
		for _, need := range r.Snapshots {
			s.requestSnapshot(sn, need)
		}
		s.maybeSnapshot(sn)
		sn.queue = append(sn.queue, r)
		if !sn.pipelined || s.rng.Intn(3) == 0 {
			s.flush(sn)
		}
		s.check.afterStep(sn)
	}
}

// flush writes a node's queued Readys as one batch, then sends their
// replies and hands them back to the core.
func (s *sim) flush(sn *simNode) {
	if sn.core == nil || len(sn.queue) == 0 || s.err != nil {
		return
	}
	if s.faulty() && s.rng.Float64() < s.cfg.crashMid {
		s.tracef("n%d CRASH before sync (%d Readys unwritten)", sn.id, len(sn.queue))
		s.crash(sn)
		return
	}
	var writes []GroupWrite
	mustSync := false
	promised := map[GroupID]Ballot{} // as of the Readys before, in this batch
	for _, r := range sn.queue {
		if !r.MustSync {
			s.check.unsyncedOnlyCommits(sn, r.Persist, promised)
		}
		for _, w := range r.Persist {
			if w.Hard != nil {
				promised[w.Group] = w.Hard.Promised
			}
		}
		writes = append(writes, r.Persist...)
		mustSync = mustSync || r.MustSync
	}
	save := sn.store.Save
	if !mustSync {
		save = sn.store.SaveUnsynced
	}
	if err := save(writes); err != nil {
		s.fail("node %d: save: %v", sn.id, err)
	}
	if mustSync {
		s.check.persisted(sn, writes)
	}
	queue := sn.queue
	sn.queue = nil
	var local []Message
	for _, r := range queue {
		for _, m := range r.AfterSync {
			s.check.sent(m)
			if m.To == sn.id {
				local = append(local, m)
			} else {
				s.send(m)
			}
		}
		sn.core.Advance(r)
	}
	for _, m := range local {
		if err := sn.core.Step(m); err != nil {
			s.fail("node %d: step own %s: %v", sn.id, m.String(), err)
		}
	}
}

func (s *sim) apply(sn *simNode, a Apply) {
	if want := sn.next[a.Group]; a.Slot != want {
		s.fail("node %d group %d: applied slot %d, expected %d (out of order)", sn.id, a.Group, a.Slot, want)
	}
	sn.next[a.Group] = a.Slot + 1
	ms := sn.membership(a.Group, s)
	ms.apply(a.Slot, &a.Value, s.delay())
	ms.Prune(a.Slot + 1)
	s.check.learned(sn, a)
	sn.applier(a.Group).Apply(a.Slot, &a.Value, func(slot uint64, index int, cmd *Command) []byte {
		return []byte(fmt.Sprintf("%d@%d.%d", cmd.ID.Seq, slot, index))
	}, func(cmd *Command, o Outcome) {
		s.check.outcome(sn, a.Group, cmd, o)
		if cl, ok := sn.waiters[cmd.ID]; ok {
			delete(sn.waiters, cmd.ID)
			if cmd.ID.Seq == cl.seq {
				s.succeed(cl, o)
			}
		}
	})
}

// membership returns the node's runtime copy of group g's membership.
func (sn *simNode) membership(g GroupID, s *sim) *Membership {
	m := sn.ms[g]
	if m == nil {
		init := InitialMembership(s.ids[:s.cfg.nodes])
		m = &init
		sn.ms[g] = m
	}
	return m
}

func (s *sim) delay() uint64 {
	if s.cfg.alpha > 0 {
		return s.cfg.alpha
	}
	return ChangeDelay
}

func (sn *simNode) applier(g GroupID) *Applier {
	a := sn.appliers[g]
	if a == nil {
		a = NewApplier(1000, 100)
		sn.appliers[g] = a
	}
	return a
}

func (s *sim) succeed(cl *simClient, o Outcome) {
	if !cl.waiting {
		return
	}
	s.check.success(cl, CommandID{Client: cl.id, Seq: cl.seq}, o)
	cl.waiting = false
	cl.done++
	cl.seq++
	cl.retryAt = s.now + int64(s.rng.Intn(30))
}

// redirect retries a command elsewhere after a definite "not here".
func (s *sim) redirect(cl *simClient, err error) {
	if !cl.waiting {
		return
	}
	cl.waiting = false
	hint, ok := IsNotMaster(err)
	switch {
	case s.cfg.contend && ok && s.cfg.members > 0:
		// A contending node that no longer votes sends its callers away.
		cl.target = s.rng.Intn(len(s.nodes))
	case s.cfg.contend:
	case ok && hint != 0:
		cl.target = int(hint - 1)
	default:
		cl.target = s.rng.Intn(len(s.nodes))
	}
	cl.retryAt = s.now + int64(5+s.rng.Intn(20))
}

func (s *sim) runClient(cl *simClient) {
	if cl.done >= s.cfg.perClient {
		return
	}
	if cl.waiting {
		if s.now < cl.deadline {
			return
		}
		// Outcome unknown: retry the same id, maybe elsewhere.
		cl.waiting = false
		if !s.cfg.contend || s.cfg.members > 0 {
			cl.target = s.rng.Intn(len(s.nodes))
		}
	}
	if s.now < cl.retryAt {
		return
	}
	if cl.seq == 0 {
		cl.seq = 1
	}
	sn := s.nodes[cl.target]
	if sn.core == nil {
		if !s.cfg.contend {
			cl.target = s.rng.Intn(len(s.nodes))
		}
		cl.retryAt = s.now + 20
		return
	}
	id := CommandID{Client: cl.id, Seq: cl.seq}
	cmd := Command{ID: id, Ack: cl.seq, Data: []byte(fmt.Sprintf("c%d-%d", cl.id, cl.seq))}
	// Odd clients propose ahead of the queue (Node.ProposeAhead), as the
	// server does for an identity with little in flight, so that both
	// ways of filling slots run under the checks. The choice takes nothing
	// from the random stream: the seeds keep their histories' shape.
	propose := sn.core.Propose
	if cl.id%2 == 1 {
		propose = sn.core.ProposeAhead
	}
	err := propose(cl.group, cmd)
	if err != nil {
		cl.waiting = true
		s.redirect(cl, err)
		return
	}
	s.check.proposed(cl, cmd)
	cl.waiting = true
	cl.deadline = s.now + 2000
	sn.waiters[id] = cl
	s.process(sn)
}

func (s *sim) done() bool {
	for _, cl := range s.clients {
		if cl.done < s.cfg.perClient {
			return false
		}
	}
	return true
}

// run drives the simulation to the end and returns the first violation.
func (s *sim) run() error {
	for s.now = 0; s.now < s.cfg.maxTime && s.err == nil; s.now++ {
		s.steps++
		if !s.faulty() {
			for _, sn := range s.nodes {
				if sn.core == nil {
					sn.upAt = s.now
				}
			}
		}
		for len(s.net) > 0 && s.net[0].at <= s.now && s.err == nil {
			sm := heap.Pop(&s.net).(simMsg)
			sn := s.nodes[sm.m.To-1]
			if sn.core == nil {
				continue
			}
			if s.trace != nil { // formatting every message costs a fifth of a run
				s.tracef("n%d recv %s %s", sn.id, sm.m.String(), entriesString(sm.m.Entries))
			}
			if err := sn.core.Step(sm.m); err != nil {
				s.fail("node %d: step %s: %v", sn.id, sm.m.String(), err)
			}
			s.process(sn)
		}
		for i, sn := range s.nodes {
			if sn.core == nil {
				if s.now >= sn.upAt {
					s.tracef("n%d RESTART", sn.id)
					s.start(sn)
					s.process(sn)
				}
				continue
			}
			if (s.now+int64(i)*3)%tickEvery != 0 {
				continue
			}
			if s.faulty() && s.rng.Float64() < s.cfg.crash {
				s.tracef("n%d CRASH", sn.id)
				s.crash(sn)
				continue
			}
			s.flush(sn)
			if sn.core == nil {
				continue
			}
			sn.core.Tick()
			s.process(sn)
		}
		if s.faulty() && s.now%tickEvery == 0 && s.cfg.stale > 0 && s.now >= s.adv.until && s.rng.Float64() < s.cfg.stale {
			s.isolateMaster()
		}
		if s.faulty() && s.now%tickEvery == 0 && s.cfg.topology > 0 && s.rng.Float64() < s.cfg.topology {
			s.reshape()
		}
		if s.faulty() && s.now%tickEvery == 0 && s.rng.Float64() < s.cfg.partition {
			a, b := s.ids[s.rng.Intn(len(s.ids))], s.ids[s.rng.Intn(len(s.ids))]
			until := s.now + int64(50+s.rng.Intn(500))
			s.cut[[2]NodeID{a, b}] = until
			if s.rng.Intn(2) == 0 {
				s.cut[[2]NodeID{b, a}] = until
			}
		}
		s.deliverSnapshots()
		if s.faulty() && s.now%tickEvery == 0 && s.cfg.members > 0 {
			s.operate()
		}
		for _, cl := range s.clients {
			s.runClient(cl)
		}
		if s.now > s.cfg.faultTime && s.done() {
			return s.check.final()
		}
	}
	if s.err != nil {
		return s.err
	}
	var open []string
	for _, cl := range s.clients {
		if cl.done < s.cfg.perClient {
			open = append(open, fmt.Sprintf("client %d (group %d) at seq %d, %d/%d done", cl.id, cl.group, cl.seq, cl.done, s.cfg.perClient))
		}
	}
	return fmt.Errorf("liveness: %d time units after the network healed, not everything finished: %v", s.cfg.maxTime-s.cfg.faultTime, open)
}

// staleAdversary isolates one group's master with a bridge (simConfig.stale).
type staleAdversary struct {
	group          GroupID
	master, bridge NodeID
	until          int64
}

func (a *staleAdversary) drops(now int64, m Message) bool {
	if now >= a.until || m.Group != a.group {
		return false
	}
	if m.From == a.master || m.To == a.master {
		other := m.To
		if other == a.master {
			other = m.From
		}
		return other != a.bridge
	}
	if m.To == a.bridge {
		// The bridge hears the other side only in messages that carry no
		// ballot it would promise: heartbeats and fetch replies.
		return m.Type != MsgCommit && m.Type != MsgFetchReply
	}
	return false
}

// isolateMaster starts the stale-master adversary on a random group whose
// master is known, if any.
func (s *sim) isolateMaster() {
	g := GroupID(s.rng.Intn(s.cfg.groups))
	for _, sn := range s.nodes {
		if sn.core == nil {
			continue
		}
		if st, _ := sn.core.Status(g); st.Role == "master" {
			bridge := s.ids[s.rng.Intn(len(s.ids))]
			if bridge == sn.id {
				return
			}
			s.adv = staleAdversary{group: g, master: sn.id, bridge: bridge, until: s.now + int64(1000+s.rng.Intn(3000))}
			s.tracef("adversary: group %d master %d isolated with bridge %d until %d", g, sn.id, bridge, s.adv.until)
			return
		}
	}
}

// reshape splits the nodes into two sides for a while; with a bridge, one
// node of the smaller side reaches both. Cuts already in place stay.
func (s *sim) reshape() {
	order := s.rng.Perm(len(s.ids))
	small := 1 + s.rng.Intn(len(s.ids)/2)
	bridge := -1
	if s.rng.Intn(2) == 0 && small > 1 {
		bridge = order[0]
	}
	until := s.now + int64(100+s.rng.Intn(1500))
	for i, a := range order {
		for j, b := range order {
			if (i < small) == (j < small) || a == bridge || b == bridge {
				continue
			}
			s.cut[[2]NodeID{s.ids[a], s.ids[b]}] = until
		}
	}
	s.tracef("partition: %v | %v (bridge %d) until %d", order[:small], order[small:], bridge, until)
}

func entriesString(es []Entry) string {
	if len(es) == 0 {
		return ""
	}
	out := "["
	for i, e := range es {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("s%d:b%s:v%d.%s/%d", e.Slot, e.Ballot, e.Value.ID.N, e.Value.ID.Ballot, len(e.Value.Cmds))
		if e.Chosen {
			out += "!"
		}
	}
	return out + "]"
}

// Snapshots in the simulator: a node's state machine for a group is its
// Applier and the next slot to apply; a snapshot holds both. Nodes snapshot
// every snapEvery applied slots and compact their logs, so that a node that
// was down or cut off for long needs a snapshot from a peer, which the
// runtime's part (requestSnapshot, deliverSnapshots) transfers like the
// real one: from the one peer the core named, one transfer per group, lost
// when either side crashes, installed durably before the core hears of it.

type simTransfer struct {
	at          int64
	to          *simNode
	incarnation int
	need        SnapshotNeed
}

// A simulator snapshot: next slot, membership length, membership, applier.
func encodeSimSnapshot(next uint64, ms *Membership, a *Applier) []byte {
	b := binary.AppendUvarint(nil, next)
	m := AppendMembership(nil, ms)
	b = binary.AppendUvarint(b, uint64(len(m)))
	return append(append(b, m...), a.Snapshot()...)
}

func decodeSimSnapshot(data []byte) (uint64, []byte, Membership, error) {
	next, n := binary.Uvarint(data)
	if n <= 0 {
		return 0, nil, Membership{}, fmt.Errorf("no slot")
	}
	l, k := binary.Uvarint(data[n:])
	if k <= 0 || l > uint64(len(data)-n-k) {
		return 0, nil, Membership{}, fmt.Errorf("bad membership length")
	}
	ms, err := DecodeMembership(data[n+k : n+k+int(l)])
	return next, data[n+k+int(l):], ms, err
}

func (s *sim) restoreSnapshot(sn *simNode, g GroupID, slot uint64, data []byte) error {
	next, ap, ms, err := decodeSimSnapshot(data)
	if err != nil || next != slot {
		return fmt.Errorf("group %d: snapshot at slot %d says next slot %d: %v", g, slot, next, err)
	}
	a, err := RestoreApplier(ap, 1000, 100)
	if err != nil {
		return fmt.Errorf("group %d: snapshot at slot %d: %w", g, slot, err)
	}
	sn.appliers[g] = a
	sn.ms[g] = &ms
	sn.next[g] = slot
	sn.snapped[g] = slot
	return nil
}

// maybeSnapshot snapshots every group of sn that applied snapEvery slots
// since its last snapshot.
func (s *sim) maybeSnapshot(sn *simNode) {
	if s.cfg.snapEvery <= 0 || sn.core == nil {
		return
	}
	for g := range GroupID(s.cfg.groups) {
		next := sn.next[g]
		if next < sn.snapped[g]+uint64(s.cfg.snapEvery) {
			continue
		}
		if err := sn.store.SaveSnapshot(g, next, encodeSimSnapshot(next, sn.membership(g, s), sn.applier(g)), s.cfg.snapMargin); err != nil {
			s.fail("node %d: save snapshot: %v", sn.id, err)
			return
		}
		sn.snapped[g] = next
		if err := sn.core.SnapshotTaken(g, next); err != nil {
			s.fail("node %d: %v", sn.id, err)
			return
		}
		s.tracef("n%d snapshot g%d at slot %d", sn.id, g, next)
	}
}

func (s *sim) requestSnapshot(sn *simNode, need SnapshotNeed) {
	if sn.transferring[need.Group] {
		return
	}
	sn.transferring[need.Group] = true
	s.snaps = append(s.snaps, simTransfer{at: s.now + 1 + s.rng.Int63n(5*s.cfg.maxDelay), to: sn, incarnation: sn.incarnation, need: need})
	s.tracef("n%d asks n%d for a snapshot of g%d at slot %d or later", sn.id, need.From, need.Group, need.Slot)
}

func (s *sim) deliverSnapshots() {
	keep := s.snaps[:0]
	var due []simTransfer
	for _, t := range s.snaps {
		if t.at <= s.now {
			due = append(due, t)
		} else {
			keep = append(keep, t)
		}
	}
	s.snaps = keep
	for _, t := range due {
		sn, g := t.to, t.need.Group
		if sn.core == nil || sn.incarnation != t.incarnation {
			continue // the receiver crashed: its new life asks again
		}
		sn.transferring[g] = false
		from := s.nodes[t.need.From-1]
		if from.core == nil || (s.faulty() && s.rng.Float64() < s.cfg.loss) {
			continue // the sender is down or the transfer broke: asked again
		}
		slot, data, err := from.store.LoadSnapshot(g)
		if err != nil || slot < t.need.Slot {
			s.fail("node %d: snapshot of group %d at slot %d, below the %d it announced: %v", from.id, g, slot, t.need.Slot, err)
			return
		}
		if slot <= sn.next[g] {
			continue // caught up meanwhile
		}
		// Durable first, then the state machine, then the core.
		if err := sn.store.SaveSnapshot(g, slot, data, s.cfg.snapMargin); err != nil {
			s.fail("node %d: save snapshot: %v", sn.id, err)
			return
		}
		if err := s.restoreSnapshot(sn, g, slot, data); err != nil {
			s.fail("node %d: install: %v", sn.id, err)
			return
		}
		s.tracef("n%d installs n%d's snapshot of g%d at slot %d", sn.id, from.id, g, slot)
		if err := sn.core.InstallSnapshot(g, slot, *sn.ms[g]); err != nil {
			s.fail("node %d: %v", sn.id, err)
			return
		}
		s.check.installed++
		s.process(sn)
	}
}

// operate is the simulator's operator: for each group, now and then, it asks
// the group's master (as this node sees it) for the next membership change:
// promote a learner, else remove a voter when there are more than the
// initial number, else add a learner (a spare node or one removed before,
// which rejoins with its durable state intact) or remove one more voter
// while at least two stay. Refusals (not master, a change in progress, a
// learner not caught up) are part of the workload.
func (s *sim) operate() {
	for g := range GroupID(s.cfg.groups) {
		if s.rng.Float64() >= s.cfg.members {
			continue
		}
		var master *simNode
		for _, sn := range s.nodes {
			if sn.core == nil {
				continue
			}
			if st, _ := sn.core.Status(g); st.Role == "master" {
				master = sn
				break
			}
		}
		if master == nil {
			continue
		}
		ms, _ := master.core.Membership(g)
		latest := ms.Latest()
		voters := Voters(latest)
		var c Change
		var learners, outside []NodeID
		for _, id := range s.ids {
			i := memberIndex(latest, id)
			switch {
			case i < 0:
				outside = append(outside, id)
			case !latest[i].Voter:
				learners = append(learners, id)
			}
		}
		switch {
		case len(learners) > 0:
			c = Change{Op: Promote, Node: learners[s.rng.Intn(len(learners))]}
		case len(voters) > s.cfg.nodes || (len(voters) > 2 && s.rng.Intn(4) == 0):
			c = Change{Op: Remove, Node: voters[s.rng.Intn(len(voters))]}
		case len(outside) > 0:
			id := outside[s.rng.Intn(len(outside))]
			c = Change{Op: AddLearner, Node: id, Addr: fmt.Sprintf("sim:%d", id)}
		default:
			continue
		}
		err := master.core.ProposeChange(g, c)
		s.tracef("operator: group %d at n%d: %s: %v", g, master.id, c, err)
		if err == nil {
			s.check.changes++
		}
		s.process(master)
	}
}
