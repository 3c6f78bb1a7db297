package election

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Elector decides, for one node, when to campaign for each group, which lease
// commands to propose, and whether the node may serve a group right now. It
// has no goroutines, no clock and no I/O: time comes in as arguments,
// randomness through Config.Rand, and what to do goes out as Actions.
//
// An Elector is safe for concurrent use: the server calls Applied from the
// replica's apply goroutine and Tick from its election loop.
type Elector struct {
	// mu guards every field below. No method calls out while holding it,
	// except Tick's status callback, which runs with mu released.
	mu  sync.Mutex
	cfg Config
	// up is what PeerUp last said of each node; a node never reported
	// counts as up.
	up     map[paxos.NodeID]bool
	groups []*group
	subs   map[*subscriber]struct{}
	// retiring is set by Retire: hand every group over, campaign no more.
	retiring bool
	// wake has a token whenever a lease was applied, so that a driver
	// waiting for the next expiry looks again (see NextExpiry).
	wake chan struct{}
}

// held is a lease of another holder (or of an earlier incarnation of this
// node) that may still be in force, by this node's count.
type held struct {
	holder   paxos.NodeID
	inc, ctr uint32    // the nonce of the holder's latest such lease
	until    time.Time // applied time plus duration, on this node's clock
}

// current is the last valid lease command applied in a group. It decides
// who the master is: a later command always supersedes an earlier one.
type current struct {
	set     bool
	slot    uint64
	cmd     LeaseCmd
	learned time.Time // when this node applied it
	// mine is set for a lease this incarnation sent, whose send time is
	// known; until is then that send time plus Duration minus Drift.
	mine  bool
	until time.Time
}

func (c *current) lease() bool { return c.set && !c.cmd.Release }

// expiry is when the current lease ends by the count of a node that did not
// send it, which is how every node reports the master.
func (c *current) expiry() time.Time { return c.learned.Add(c.cmd.Duration) }

// group is the election state of one group on this node.
type group struct {
	id paxos.GroupID
	// voters are the group's voters in force, sorted (Config.Nodes until
	// SetVoters says otherwise): the preferred node, ranks, the majority-up
	// check and handovers count over them only.
	voters []paxos.NodeID
	// voter says whether this node is one of voters; a node that is not
	// never campaigns, and hands over what it holds.
	voter     bool
	rank      int // distance from the preferred node: 0 for it, then 1, 2, ...; len(voters) when not a voter
	preferred paxos.NodeID

	cur  current
	next uint64 // one past the slot of the last command applied
	held []held
	// freeAt is when the last lease this node knows of ends by its count
	// (or when a release made the group masterless); zero before the first.
	freeAt time.Time
	// othersUntil is when, by this node's count, every other holder it
	// learned of (an earlier incarnation of itself included) stopped
	// serving: the end of the latest such lease, or the time it learned
	// that holder's release. Zero while it knows of none.
	othersUntil time.Time

	// Own proposals. inc is this incarnation's half of every nonce, ctr
	// the counter of the last one used.
	inc           uint32
	ctr           uint32
	sent          map[uint64]time.Time // nonce -> send time, for leases not yet applied
	lastSent      time.Time            // last lease proposal sent (renewal pacing)
	outstanding   uint64               // nonce of the proposal we wait for, 0 if none
	outstandingAt time.Time
	retry         bool // our last proposal failed: try again without waiting for RenewEvery
	// needStatus is set when a renewal failed because this node is not the
	// Paxos master: the next renewal asks the replica's status first.
	needStatus bool

	// Handover: givenUp is set from the moment this node decides to hand
	// the group over (it stops serving then) until another command is
	// applied.
	givenUp      bool
	givenUpAt    time.Time
	handTo       paxos.NodeID // the node the release names
	lastHandover time.Time

	// Campaigning.
	jitterFor    time.Time // the freeAt for which jitter was drawn
	jitter       time.Duration
	campaignedAt time.Time
	masterBallot paxos.Ballot // our Paxos ballot when Tick last saw us master
	boundary     uint64       // the group's Next when we first saw masterBallot

	// The group's master by the log alone, the same on every node: the
	// holder of the last lease command unless a valid release followed
	// (zero then, and before the first lease). seq counts its changes.
	logMaster paxos.NodeID
	seq       uint64

	ev eventLog
}

// New returns an Elector for cfg, after filling defaults and validating.
func New(cfg Config) (*Elector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Peers count as up until PeerUp says otherwise, so that a server
	// that reports nothing still elects masters.
	e := &Elector{cfg: cfg, up: map[paxos.NodeID]bool{}, subs: map[*subscriber]struct{}{}, wake: make(chan struct{}, 1)}
	nodes := sortedNodes(cfg.Nodes)
	e.groups = make([]*group, cfg.Groups)
	for i := range e.groups {
		e.groups[i] = &group{
			id:   paxos.GroupID(i),
			inc:  e.newIncarnation(),
			sent: map[uint64]time.Time{},
			ev:   eventLog{cap: cfg.History},
		}
		e.groups[i].setVoters(nodes, cfg.Self)
	}
	return e, nil
}

// setVoters sets g's voters (sorted, not empty) and what follows from them
// for self: the preferred node is the voter at index g mod len(voters), as
// the Paxos core counts it, and self's rank its distance from it.
func (g *group) setVoters(voters []paxos.NodeID, self paxos.NodeID) {
	g.voters = voters
	n := len(voters)
	pref := int(g.id) % n
	g.preferred = voters[pref]
	i := slices.Index(voters, self)
	g.voter = i >= 0
	if g.voter {
		g.rank = (i - pref + n) % n
	} else {
		g.rank = n
	}
}

// SetVoters tells the Elector group g's voters in force (a membership
// change came into force, or the server read the memberships at start).
// From then on only they rank, count for the majority-up check and take
// handovers, and this node campaigns for g only if it is one of them: a
// learner, or a node waiting to join or removed, never campaigns, and a
// node that holds g's lease when it stops being a voter hands g over. An
// empty list or an unknown group is ignored.
func (e *Elector) SetVoters(g paxos.GroupID, voters []paxos.NodeID) {
	if len(voters) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return
	}
	vs := sortedNodes(voters)
	if slices.Equal(vs, gr.voters) {
		return
	}
	gr.setVoters(vs, e.cfg.Self)
}

// Voters returns group g's voters as the Elector counts them.
func (e *Elector) Voters(g paxos.GroupID) []paxos.NodeID {
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return nil
	}
	return slices.Clone(gr.voters)
}

// Nodes returns every node that is a voter of some group, sorted: the
// nodes whose reachability matters (Run asks PeerUp about them).
func (e *Elector) Nodes() []paxos.NodeID {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nodesLocked()
}

func (e *Elector) nodesLocked() []paxos.NodeID {
	var out []paxos.NodeID
	for _, g := range e.groups {
		for _, v := range g.voters {
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return out
}

// isUp reports what PeerUp last said of n (true if never told; always
// true for this node).
func (e *Elector) isUp(n paxos.NodeID) bool {
	up, told := e.up[n]
	return n == e.cfg.Self || !told || up
}

// newIncarnation draws a random, nonzero 32-bit incarnation. It does not
// loop on Rand, so a degenerate source (say one that always returns 0) only
// makes incarnations repeat.
func (e *Elector) newIncarnation() uint32 {
	v := uint32(e.cfg.Rand(1<<16))<<16 | uint32(e.cfg.Rand(1<<16))
	if v == 0 {
		v = 1
	}
	return v
}

// nextNonce returns a fresh nonce of this incarnation for g.
func (e *Elector) nextNonce(g *group) uint64 {
	g.ctr++
	if g.ctr == 0 {
		// The counter wrapped: become a new incarnation. Leases of the old
		// one applied later are then waited out like anyone else's.
		g.inc = e.newIncarnation()
		clear(g.sent)
		g.ctr = 1
	}
	return makeNonce(g.inc, g.ctr)
}

// Config returns the Elector's configuration, with defaults filled in.
func (e *Elector) Config() Config {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cfg
	c.Nodes = e.nodesLocked()
	return c
}

func (e *Elector) group(g paxos.GroupID) (*group, error) {
	if int(g) >= len(e.groups) {
		return nil, fmt.Errorf("election: unknown group %d: this node has groups 0 to %d (check the cluster's group count)", g, len(e.groups)-1)
	}
	return e.groups[g], nil
}

// Applied takes in a lease command chosen at slot of group g and applied at
// now. Commands of a group must come in log order, each once, as the replica
// applies them (a restarted node replays its log through Applied; every lease
// it finds counts as just learned, which errs on the safe side). An invalid
// command or unknown group is reported and otherwise ignored.
func (e *Elector) Applied(g paxos.GroupID, slot uint64, cmd LeaseCmd, now time.Time) error {
	if err := cmd.Validate(); err != nil {
		return fmt.Errorf("election: group %d slot %d: %w", g, slot, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return err
	}
	if slot+1 < gr.next {
		return fmt.Errorf("election: group %d: lease command at slot %d after one at slot %d; commands must come in log order, once", g, slot, gr.next-1)
	}
	gr.next = slot + 1
	e.expire(gr, now)
	e.prune(gr, now)
	if cmd.Release {
		e.applyRelease(gr, slot, cmd, now)
	} else {
		e.applyLease(gr, slot, cmd, now)
	}
	return nil
}

func (e *Elector) applyLease(g *group, slot uint64, cmd LeaseCmd, now time.Time) {
	c := current{set: true, slot: slot, cmd: cmd, learned: now}
	if sentAt, ok := g.sent[cmd.Nonce]; ok && cmd.Holder == e.cfg.Self && incarnation(cmd.Nonce) == g.inc {
		// Our own lease: it was chosen after we sent it, so counting from
		// the send time, minus the drift margin, ends it on our clock before
		// it ends on any other node's (which count from when they learned).
		delete(g.sent, cmd.Nonce)
		c.mine = true
		c.until = sentAt.Add(cmd.Duration - e.cfg.Drift)
		if e.cfg.mutate&mutHolderFromLearn != 0 {
			c.until = now.Add(cmd.Duration)
		}
	} else {
		// Another holder's lease, or ours from an earlier incarnation whose
		// send time we do not know: wait it out like anyone else.
		g.hold(held{holder: cmd.Holder, inc: incarnation(cmd.Nonce), ctr: counter(cmd.Nonce), until: c.expiry()})
		if t := c.expiry(); t.After(g.othersUntil) {
			g.othersUntil = t
		}
	}
	if g.outstanding == cmd.Nonce {
		g.outstanding = 0
	}
	if g.logMaster != cmd.Holder {
		if g.logMaster != 0 && g.ev.master != 0 {
			// Another holder's lease follows directly: the log says the
			// old one ran out (its successor waited it out before it
			// campaigned), even where this node's count has not yet. Say
			// so first, so that every node's events tell the same story.
			e.emit(g, Event{Group: g.id, Epoch: epochOf(g.cur.slot, kindExpired), Master: 0, Cause: CauseExpired, Seq: g.seq})
		}
		g.logMaster = cmd.Holder
		g.seq++
		defer e.emit(g, Event{Group: g.id, Epoch: epochOf(slot, kindLease), Master: cmd.Holder, Cause: CauseLease, Seq: g.seq})
	} else if g.ev.master != cmd.Holder {
		// A renewal applied after this node's count of the lease had run
		// out: the same master again, no change in the log.
		defer e.emit(g, Event{Group: g.id, Epoch: epochOf(slot, kindLease), Master: cmd.Holder, Cause: CauseRenewed, Seq: g.seq})
	}
	g.cur = c
	g.givenUp = false
	if t := c.expiry(); t.After(g.freeAt) {
		g.freeAt = t
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Elector) applyRelease(g *group, slot uint64, cmd LeaseCmd, now time.Time) {
	cur := &g.cur
	inc, ctr := incarnation(cmd.Nonce), counter(cmd.Nonce)
	if !cur.lease() || cur.cmd.Holder != cmd.Holder || incarnation(cur.cmd.Nonce) != inc || counter(cur.cmd.Nonce) >= ctr {
		// A release counts only against the lease it follows: the holder's
		// own latest lease, of the same incarnation, sent before it. Any
		// other release is stale (say from an earlier incarnation, chosen
		// late) and ignoring it only makes us wait longer.
		return
	}
	// The holder stopped serving before it sent the release, and stops
	// serving on every lease of this incarnation sent before it, so none of
	// them needs waiting out any longer.
	g.held = slices.DeleteFunc(g.held, func(h held) bool {
		return h.holder == cmd.Holder && h.inc == inc && h.ctr < ctr
	})
	if cmd.Holder == e.cfg.Self && inc == g.inc {
		for n := range g.sent {
			if counter(n) < ctr {
				delete(g.sent, n)
			}
		}
	}
	if g.outstanding == cmd.Nonce {
		g.outstanding = 0
	}
	g.cur = current{set: true, slot: slot, cmd: cmd, learned: now}
	g.givenUp = false
	g.freeAt = now
	for _, h := range g.held {
		if h.until.After(g.freeAt) {
			g.freeAt = h.until
		}
	}
	if cmd.Holder != e.cfg.Self || inc != g.inc {
		// The releaser stopped serving before it sent the release; the
		// leases of other holders still held end as counted.
		g.othersUntil = g.freeAt
	}
	// A change in the log, announced even where this node's count of the
	// lease ran out already, so that Seq stays the same on every node.
	g.logMaster = 0
	g.seq++
	e.emit(g, Event{Group: g.id, Epoch: epochOf(slot, kindRelease), Master: 0, Cause: CauseReleased, To: cmd.To, Seq: g.seq})
}

// hold records a lease to wait out, merged with an earlier one of the same
// holder and incarnation (later counter, later end).
func (g *group) hold(h held) {
	for i := range g.held {
		o := &g.held[i]
		if o.holder == h.holder && o.inc == h.inc {
			o.ctr = max(o.ctr, h.ctr)
			if h.until.After(o.until) {
				o.until = h.until
			}
			return
		}
	}
	g.held = append(g.held, h)
}

// prune forgets leases that are over, and send times that no longer matter:
// a lease applied a Lease after it was sent is over on arrival. Such a
// lease, if it is chosen after all, is waited out like another node's.
func (e *Elector) prune(g *group, now time.Time) {
	g.held = slices.DeleteFunc(g.held, func(h held) bool { return !h.until.After(now) })
	for n, t := range g.sent {
		if now.Sub(t) > 2*e.cfg.Lease {
			delete(g.sent, n)
		}
	}
}

// heldAt reports whether a lease of another holder may be in force at now.
func (g *group) heldAt(now time.Time) bool {
	for _, h := range g.held {
		if h.until.After(now) {
			return true
		}
	}
	return false
}

// serving is Serving with e.mu held.
func (e *Elector) serving(g *group, now time.Time) bool {
	c := &g.cur
	if !c.lease() || !c.mine || g.givenUp || !now.Before(c.until) {
		return false
	}
	return e.cfg.mutate&mutNoWaitOut != 0 || !g.heldAt(now)
}

// Serving reports whether this node may serve group g at now: the last lease
// command of g it applied is its own lease, that lease holds by its own
// conservative count, it has not decided to hand the group over, and every
// lease of another holder it has learned is over by its own clock.
func (e *Elector) Serving(g paxos.GroupID, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return false
	}
	return e.serving(gr, now)
}

// PredecessorEnd returns when, by this node's conservative count, the
// other holders of group g it learned of stopped serving: the end of the
// latest lease of another node (or of an earlier incarnation of this one),
// or when it learned that holder's release. It is zero if this node never
// learned of another holder. Once this node serves g, no other node has
// answered anything for g since that time, so a session's last keep-alive,
// which only a serving master answers, came no later: a new master may
// count sessions' TTLs from there instead of from when it started serving.
func (e *Elector) PredecessorEnd(g paxos.GroupID) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return time.Time{}
	}
	return gr.othersUntil
}

// Master returns the master of group g as this node sees it at now (zero
// when there is none) and the epoch of that state (see Event). A master that
// this node reports may not be serving yet: it waits out its predecessor's
// lease first.
func (e *Elector) Master(g paxos.GroupID, now time.Time) (paxos.NodeID, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return 0, 0
	}
	e.expire(gr, now)
	return gr.ev.master, gr.ev.epoch
}

// PeerUp tells the Elector whether node n is reachable. A node hands a group
// back to its preferred node only while that node is up, and campaigns only
// while it sees a majority up (a campaign it cannot win only raises ballots
// that later disrupt the live master). Peers count as up until told
// otherwise; this node is always up.
func (e *Elector) PeerUp(n paxos.NodeID, up bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n != e.cfg.Self {
		e.up[n] = up
	}
}

// Failed tells the Elector that the proposal of the command with nonce in
// group g returned err (not master, overloaded, outcome unknown), so that
// Tick may propose again without waiting. The command may still be chosen
// later; that is safe.
func (e *Elector) Failed(g paxos.GroupID, nonce uint64, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gr, gerr := e.group(g); gerr == nil && gr.outstanding == nonce {
		gr.outstanding = 0
		gr.retry = true
		// Renewals go out without asking the replica's status first (see
		// Tick); after a failure (this node may no longer be the Paxos
		// master), the next one asks, to campaign again if need be.
		gr.needStatus = true
	}
}

// NextExpiry returns when the earliest lease of a master this node
// announces ends by its count, or false when it announces none. A driver
// that calls Expire then announces "no master" at that moment, not at its
// next Tick. Wake tells it to look again.
func (e *Elector) NextExpiry() (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var next time.Time
	for _, g := range e.groups {
		if g.ev.master != 0 && g.cur.lease() {
			if t := g.cur.expiry(); next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	return next, !next.IsZero()
}

// Wake has a value whenever a lease was applied since it was last read, so
// that the expiry the driver waits for may be another (see NextExpiry).
func (e *Elector) Wake() <-chan struct{} { return e.wake }

// Expire announces "no master" for every group whose master's lease has
// run out by this node's count at now.
func (e *Elector) Expire(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, g := range e.groups {
		e.expire(g, now)
	}
}

// Retire makes this node hand over every group it holds, to the group's
// preferred node when that is up and another node, else to another node that
// is up, and campaign for none, from the next Tick on: a node that is about
// to stop calls it, then waits until Holding is zero. It returns how many
// groups this node holds.
func (e *Elector) Retire() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.retiring = true
	return e.holdingLocked()
}

// Holding returns how many groups this node holds a lease of that no
// release of its own has ended yet, whether or not it serves them.
func (e *Elector) Holding() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.holdingLocked()
}

// Handing returns how many groups this node released whose successor's
// lease this node has not applied yet, besides the groups it holds
// (Holding). A node that stops right after its release is applied leaves
// the others to learn of the release only from a new master, which waits a
// lease first: it should keep running until Handing is zero, or a little.
func (e *Elector) Handing() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, g := range e.groups {
		if g.cur.set && g.cur.cmd.Holder == e.cfg.Self && incarnation(g.cur.cmd.Nonce) == g.inc {
			n++
		}
	}
	return n
}

func (e *Elector) holdingLocked() int {
	n := 0
	for _, g := range e.groups {
		if g.cur.lease() && g.cur.mine {
			n++
		}
	}
	return n
}

// PeersUp reports whether PeerUp last said some other node is up.
func (e *Elector) PeersUp() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.nodesLocked() {
		if n != e.cfg.Self && e.isUp(n) {
			return true
		}
	}
	return false
}

// GroupMaster is one group's master as this node sees it.
type GroupMaster struct {
	Group paxos.GroupID
	// Master is zero when the group has none.
	Master paxos.NodeID
	Epoch  uint64
	// Seq is the number of master changes in the group's log (see Event).
	Seq uint64
	// Preferred is the node the group prefers (g mod N in the sorted list).
	Preferred paxos.NodeID
	// Serving is whether this node serves the group now.
	Serving bool
	// Until is when the master's lease ends by this node's count (zero
	// when there is no master).
	Until time.Time
}

// Snapshot returns every group's master as this node sees it at now, for
// status pages.
func (e *Elector) Snapshot(now time.Time) []GroupMaster {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]GroupMaster, len(e.groups))
	for i, g := range e.groups {
		e.expire(g, now)
		out[i] = GroupMaster{Group: g.id, Master: g.ev.master, Epoch: g.ev.epoch, Seq: g.ev.seq, Preferred: g.preferred, Serving: e.serving(g, now)}
		if g.ev.master != 0 {
			out[i].Until = g.cur.expiry()
		}
	}
	return out
}
