package election

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// The simulator runs several Electors against a model of Paxos with a
// simulated real time, per-node clocks that run at 1 ± 1% speed, delivery
// lags, isolation, crashes with restarts, pauses and proposals that land late.
// The model lets strictly more happen than Paxos does (a proposal of an old
// master may still land after a new master won), because the election's
// safety must only rest on two facts: every node applies one log in one
// order, and a command is applied after it was sent.
//
// Every simulated millisecond the checker asks every live node whether it
// serves each group, on its own clock, and fails if two do at once.

var simBase = time.Unix(1_700_000_000, 0)

type simParams struct {
	seed   uint64
	nodes  int
	groups int
	dur    time.Duration
	// faults are injected until dur-quiet; the last quiet stretch has none.
	faults bool
	quiet  time.Duration
	// crashAt, if set, crashes the node serving group 0 at that time for good.
	crashAt time.Duration
	// fast makes the network fast and steady (failover measurements).
	fast   bool
	config func(*Config)
}

type simEntry struct {
	cmd    LeaseCmd
	landed time.Duration
}

type simNode struct {
	idx       int
	id        paxos.NodeID
	e         *Elector
	rate      float64
	offset    time.Duration
	down      bool
	isolated  bool
	mute      bool // can receive but not send (one-way partition)
	paused    bool
	lag       time.Duration
	applied   []int
	nextTick  time.Duration
	preparing []bool
	boundary  []int
	restarts  int
	stuck     []func() // proposals that land when the node heals
}

type simEvent struct {
	at  time.Duration
	seq int
	fn  func()
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type sim struct {
	t      testing.TB
	p      simParams
	rng    *rand.Rand
	cfg    Config
	ids    []paxos.NodeID
	nodes  []*simNode
	logs   [][]simEntry
	pm     []int // Paxos master per group (node index), -1 for none
	ballot []uint64
	now    time.Duration
	q      simQueue
	seq    int

	// Results.
	violation string
	servedBy  [][]int8 // per group, per ms: serving node index, -1 none
	crashed   int      // node crashed at crashAt, -1 none
}

func newSim(t testing.TB, p simParams) *sim {
	s := &sim{t: t, p: p, rng: rand.New(rand.NewPCG(p.seed, 0x5eed)), crashed: -1}
	for i := 1; i <= p.nodes; i++ {
		s.ids = append(s.ids, paxos.NodeID(i))
	}
	s.cfg = Config{Nodes: s.ids, Groups: p.groups}
	if p.config != nil {
		p.config(&s.cfg)
	}
	s.logs = make([][]simEntry, p.groups)
	s.pm = make([]int, p.groups)
	s.ballot = make([]uint64, p.groups)
	for g := range s.pm {
		s.pm[g] = -1
	}
	s.servedBy = make([][]int8, p.groups)
	for i := range s.ids {
		n := &simNode{idx: i, id: s.ids[i], rate: 0.99 + 0.02*s.rng.Float64(),
			offset: time.Duration(s.rng.Int64N(int64(time.Hour)))}
		s.start(n)
		s.nodes = append(s.nodes, n)
	}
	return s
}

// start (re)creates a node's Elector, as a process start does: a new
// incarnation that replays the log from slot 0.
func (s *sim) start(n *simNode) {
	cfg := s.cfg
	cfg.Self = n.id
	cfg.Rand = rand.New(rand.NewPCG(s.p.seed, uint64(n.idx)<<8|uint64(n.restarts))).IntN
	e, err := New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	n.e = e
	n.applied = make([]int, s.p.groups)
	n.preparing = make([]bool, s.p.groups)
	n.boundary = make([]int, s.p.groups)
	n.lag = s.baseLag()
	n.nextTick = s.now + time.Duration(s.rng.Int64N(int64(cfg.withDefaults().Tick)))
	n.restarts++
}

func (s *sim) baseLag() time.Duration {
	if s.p.fast {
		return time.Duration(s.rng.Int64N(int64(3 * time.Millisecond)))
	}
	return time.Duration(s.rng.Int64N(int64(15 * time.Millisecond)))
}

func (s *sim) clock(n *simNode) time.Time {
	return simBase.Add(n.offset + time.Duration(float64(s.now)*n.rate))
}

func (s *sim) after(d time.Duration, fn func()) {
	s.seq++
	heap.Push(&s.q, simEvent{at: s.now + d, seq: s.seq, fn: fn})
}

func (s *sim) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

func (s *sim) run() {
	if s.p.faults {
		s.scheduleFaults()
	}
	if s.p.crashAt > 0 {
		s.after(s.p.crashAt, s.crashServerOfGroup0)
	}
	const step = time.Millisecond
	for s.now = 0; s.now <= s.p.dur && s.violation == ""; s.now += step {
		for len(s.q) > 0 && s.q[0].at <= s.now {
			heap.Pop(&s.q).(simEvent).fn()
		}
		for _, n := range s.nodes {
			s.deliver(n)
		}
		for _, n := range s.nodes {
			if !n.down && !n.paused && s.now >= n.nextTick {
				s.tick(n)
				n.nextTick += time.Duration(float64(n.e.cfg.Tick) / n.rate)
			}
		}
		s.check()
	}
}

func (s *sim) deliver(n *simNode) {
	if n.down || n.isolated || n.paused {
		return
	}
	for g, log := range s.logs {
		for n.applied[g] < len(log) && log[n.applied[g]].landed+n.lag <= s.now {
			slot := n.applied[g]
			if err := n.e.Applied(paxos.GroupID(g), uint64(slot), log[slot].cmd, s.clock(n)); err != nil {
				s.t.Fatalf("seed %d: node %d applied slot %d: %v", s.p.seed, n.id, slot, err)
			}
			n.applied[g]++
		}
	}
}

func (s *sim) reachable(i int) bool {
	return i >= 0 && !s.nodes[i].down && !s.nodes[i].isolated && !s.nodes[i].mute
}

// cutOff reports whether n cannot reach the others.
func (n *simNode) cutOff() bool { return n.isolated || n.mute }

func (s *sim) status(n *simNode, g paxos.GroupID) paxos.GroupStatus {
	st := paxos.GroupStatus{Group: g, Role: "follower", Applied: uint64(n.applied[g])}
	switch {
	case s.pm[g] == n.idx && !n.cutOff():
		st.Role = "master"
		st.Ballot = paxos.Ballot{Round: s.ballot[g], Node: n.id}
		st.Next = uint64(n.boundary[g])
	case n.preparing[g]:
		st.Role = "preparing"
	}
	if !n.isolated && s.reachable(s.pm[g]) {
		st.Master = s.ids[s.pm[g]]
	}
	return st
}

func (s *sim) tick(n *simNode) {
	acts := n.e.Tick(s.clock(n), func(g paxos.GroupID) (paxos.GroupStatus, error) { return s.status(n, g), nil })
	for _, a := range acts {
		switch a.Kind {
		case ActCampaign:
			s.campaign(n, a.Group)
		case ActPropose:
			s.propose(n, a.Group, a.Cmd)
		}
	}
}

func (s *sim) campaign(n *simNode, g paxos.GroupID) {
	n.preparing[g] = true
	if n.cutOff() {
		return
	}
	restarts := n.restarts
	s.after(s.between(2*time.Millisecond, 15*time.Millisecond), func() {
		if n.down || n.cutOff() || n.restarts != restarts {
			return
		}
		s.win(n, g)
	})
}

func (s *sim) win(n *simNode, g paxos.GroupID) {
	s.pm[g] = n.idx
	s.ballot[g]++
	n.boundary[g] = len(s.logs[g])
	n.preparing[g] = false
}

func (s *sim) land(g paxos.GroupID, cmd LeaseCmd) {
	s.logs[g] = append(s.logs[g], simEntry{cmd: cmd, landed: s.now})
}

func (s *sim) propose(n *simNode, g paxos.GroupID, cmd LeaseCmd) {
	fail := func(d time.Duration) {
		e := n.e
		s.after(d, func() { e.Failed(g, cmd.Nonce, paxos.ErrOverloaded) })
	}
	switch {
	case n.cutOff():
		if s.rng.IntN(10) < 3 {
			n.stuck = append(n.stuck, func() { s.after(s.between(time.Millisecond, 20*time.Millisecond), func() { s.land(g, cmd) }) })
		}
		fail(s.cfg.withDefaults().Lease)
	case s.pm[g] != n.idx:
		fail(time.Millisecond)
		if s.rng.IntN(10) == 0 {
			s.after(s.between(time.Millisecond, 50*time.Millisecond), func() { s.land(g, cmd) })
		}
	default:
		d := s.between(time.Millisecond, 20*time.Millisecond)
		if s.p.fast {
			d = s.between(time.Millisecond, 4*time.Millisecond)
		} else if s.rng.IntN(20) == 0 {
			d = s.between(50*time.Millisecond, 400*time.Millisecond)
		}
		if s.p.fast || s.rng.IntN(100) < 97 {
			s.after(d, func() { s.land(g, cmd) })
		} else {
			fail(d)
		}
	}
}

// peerViews makes every node see the others as they are, after a detection
// delay.
func (s *sim) peerViews(delay time.Duration) {
	s.after(delay, func() {
		for _, a := range s.nodes {
			for _, b := range s.nodes {
				if a != b {
					a.e.PeerUp(b.id, !a.isolated && !b.cutOff() && !b.down)
				}
			}
		}
	})
}

// isolate cuts n off for d: both ways, or with mute only its outbound
// traffic (it still learns the log, slowly).
func (s *sim) isolate(n *simNode, d time.Duration, mute bool) {
	if n.down || n.cutOff() {
		return
	}
	if mute {
		n.mute = true
		n.lag = s.between(100*time.Millisecond, 800*time.Millisecond)
	} else {
		n.isolated = true
	}
	s.peerViews(s.between(50*time.Millisecond, 400*time.Millisecond))
	s.after(d, func() {
		n.isolated, n.mute = false, false
		n.lag = s.baseLag()
		for g := range n.preparing {
			if n.preparing[g] && !n.down {
				// A campaign started in isolation may win on return and
				// disrupt the live master, as a Paxos prepare with a high
				// ballot does.
				if s.rng.IntN(2) == 0 {
					s.win(n, paxos.GroupID(g))
				}
				n.preparing[g] = false
			}
		}
		for _, f := range n.stuck {
			f()
		}
		n.stuck = nil
		s.peerViews(s.between(50*time.Millisecond, 400*time.Millisecond))
	})
}

func (s *sim) crash(n *simNode, d time.Duration) {
	if n.down {
		return
	}
	n.down = true
	n.stuck = nil
	for g := range s.pm {
		if s.pm[g] == n.idx {
			s.pm[g] = -1
		}
	}
	s.peerViews(s.between(50*time.Millisecond, 400*time.Millisecond))
	if d > 0 {
		s.after(d, func() {
			n.down, n.isolated, n.mute, n.paused = false, false, false, false
			s.start(n)
			s.peerViews(s.between(50*time.Millisecond, 400*time.Millisecond))
		})
	}
}

func (s *sim) scheduleFaults() {
	end := s.p.dur - s.p.quiet
	for at := s.between(time.Second, 2*time.Second); at < end; at += s.between(300*time.Millisecond, 2500*time.Millisecond) {
		n := s.nodes[s.rng.IntN(len(s.nodes))]
		kind := s.rng.IntN(6)
		d := min(s.between(300*time.Millisecond, 4*time.Second), end-at)
		s.seq++
		heap.Push(&s.q, simEvent{at: at, seq: s.seq, fn: func() {
			switch kind {
			case 0:
				s.isolate(n, d, false)
			case 5:
				s.isolate(n, d, true)
			case 1:
				s.crash(n, d)
			case 2: // a slow apply path
				n.lag = s.between(100*time.Millisecond, 800*time.Millisecond)
				s.after(d, func() { n.lag = s.baseLag() })
			case 3: // a process pause: no ticks, no applies
				if !n.down {
					n.paused = true
					s.after(min(d, 1500*time.Millisecond), func() { n.paused = false })
				}
			case 4: // a Paxos master change nobody asked for
				g := s.rng.IntN(len(s.logs))
				if s.reachable(n.idx) {
					s.win(n, paxos.GroupID(g))
				}
			}
		}})
	}
}

func (s *sim) crashServerOfGroup0() {
	for _, n := range s.nodes {
		if !n.down && n.e.Serving(0, s.clock(n)) {
			s.crashed = n.idx
			s.crash(n, 0)
			return
		}
	}
	s.t.Fatalf("seed %d: nobody serves group 0 at %v, so there is nothing to crash", s.p.seed, s.now)
}

func (s *sim) check() {
	for g := range s.logs {
		var servers []string
		who := int8(-1)
		for _, n := range s.nodes {
			if !n.down && n.e.Serving(paxos.GroupID(g), s.clock(n)) {
				servers = append(servers, fmt.Sprintf("node %d (clock %.4f)", n.id, n.rate))
				who = int8(n.idx)
			}
		}
		if len(servers) > 1 {
			s.violation = fmt.Sprintf("seed %d: at %v group %d is served by %s", s.p.seed, s.now, g, strings.Join(servers, " and "))
		}
		s.servedBy[g] = append(s.servedBy[g], who)
	}
}

// lastServer is who serves group g at the end of the run (-1 for nobody).
func (s *sim) lastServer(g int) int { return int(s.servedBy[g][len(s.servedBy[g])-1]) }
