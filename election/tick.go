package election

import (
	"time"

	"github.com/lockd/lockd/paxos"
)

// ActionKind says what an Action asks for.
type ActionKind uint8

// Kinds of Action.
const (
	// ActCampaign asks the driver to run phase 1 for the group
	// (paxos.Node.Campaign).
	ActCampaign ActionKind = iota + 1
	// ActPropose asks the driver to propose Cmd in the group. The holder's
	// count of a lease starts at the Tick that returned it, which is before
	// the proposal leaves, so a driver that sends late only shortens it.
	ActPropose
)

// String names the kind.
func (k ActionKind) String() string {
	switch k {
	case ActCampaign:
		return "campaign"
	case ActPropose:
		return "propose"
	}
	return "none"
}

// Action is something the Elector wants done in a group.
type Action struct {
	Kind  ActionKind
	Group paxos.GroupID
	// Cmd is the command to propose, for ActPropose.
	Cmd LeaseCmd
}

// Paxos role names, as paxos.GroupStatus.Role spells them.
const (
	roleMaster   = "master"
	roleFollower = "follower"
)

// Tick looks at every group at now and returns what to do: campaign, propose
// a lease, renew it, or hand the group over. status reports the Paxos state
// of a group; Tick calls it only for the groups where it may act, and with
// the Elector's lock released, so it may block (say on Replica.Status). A
// group whose status fails is left alone until the next Tick.
//
// The driver proposes each ActPropose command and calls Failed if the
// proposal fails; it calls Applied for every lease command the log chooses.
func (e *Elector) Tick(now time.Time, status func(paxos.GroupID) (paxos.GroupStatus, error)) []Action {
	e.mu.Lock()
	var want []paxos.GroupID
	var acts []Action
	for _, g := range e.groups {
		e.expire(g, now)
		e.prune(g, now)
		if g.holding() && !g.needStatus && !e.handOverTo(g, now) && e.renewDue(g, now) && e.idle(g, now) {
			// A renewal does not wait for the replica's status: on a busy
			// node the status query queues behind client traffic and may
			// time out tick after tick, while the lease runs out. If this
			// node is no longer the Paxos master the proposal fails
			// (Failed), and the next try asks first.
			acts = append(acts, e.propose(g, now, LeaseCmd{Holder: e.cfg.Self, Duration: e.cfg.Lease}))
			continue
		}
		if e.wantsStatus(g, now) {
			want = append(want, g.id)
		}
	}
	e.mu.Unlock()

	st := make(map[paxos.GroupID]paxos.GroupStatus, len(want))
	for _, g := range want {
		if s, err := status(g); err == nil {
			st[g] = s
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	for _, g := range want {
		if s, ok := st[g]; ok {
			acts = e.decide(e.groups[g], now, s, acts)
		}
	}
	return acts
}

// holding reports whether this node holds g's lease and has not given it up
// (whether or not the lease still holds by its count: it keeps renewing
// until another command supersedes its lease).
func (g *group) holding() bool { return g.cur.lease() && g.cur.mine && !g.givenUp }

// releasing reports whether this node gave g up and its release has not been
// applied yet, while the others may still count its lease.
func (g *group) releasing(now time.Time) bool {
	return g.cur.lease() && g.cur.mine && g.givenUp && now.Before(g.cur.expiry())
}

// idle reports whether no proposal of ours is in flight (or the one in
// flight is too old to wait for).
func (e *Elector) idle(g *group, now time.Time) bool {
	return g.outstanding == 0 || now.Sub(g.outstandingAt) >= e.cfg.RenewEvery
}

// majorityUp reports whether a majority of g's voters is up: a campaign
// without one only raises ballots that later disrupt the live master.
func (e *Elector) majorityUp(g *group) bool {
	n := 0
	for _, v := range g.voters {
		if e.isUp(v) {
			n++
		}
	}
	return 2*n > len(g.voters)
}

// campaignAt returns when this node may campaign for g, or false while a
// lease it knows of may still be in force.
func (e *Elector) campaignAt(g *group, now time.Time) (time.Time, bool) {
	if (g.cur.lease() && now.Before(g.cur.expiry())) || g.heldAt(now) {
		return time.Time{}, false
	}
	if g.freeAt.IsZero() {
		// No lease seen since start: the group is free from the first Tick.
		g.freeAt = now
	}
	if g.cur.set && g.cur.cmd.Release && g.cur.cmd.To == e.cfg.Self {
		// Handed over to us: go at once, the others wait their rank delay.
		return g.freeAt, true
	}
	if !g.jitterFor.Equal(g.freeAt) {
		g.jitterFor = g.freeAt
		g.jitter = time.Duration(e.cfg.Rand(int(e.cfg.CampaignDelay/2) + 1))
	}
	return g.freeAt.Add(time.Duration(g.rank)*e.cfg.CampaignDelay + g.jitter), true
}

func (e *Elector) handOverTo(g *group, now time.Time) bool {
	if e.retiring {
		_, ok := e.successor(g)
		return ok && e.idle(g, now)
	}
	if !g.voter {
		// No longer a voter (removed, or this node never was one): the
		// group goes to one that is.
		_, ok := e.successor(g)
		return ok && e.idle(g, now)
	}
	return g.preferred != e.cfg.Self && e.isUp(g.preferred) && e.serving(g, now) && e.idle(g, now) &&
		(g.lastHandover.IsZero() || now.Sub(g.lastHandover) >= e.cfg.HandoverBackoff)
}

// successor is the voter g is handed to: its preferred node, or, when this
// node retires or is no longer a voter and the preferred node is itself or
// down, the next voter up after it in the sorted list.
func (e *Elector) successor(g *group) (paxos.NodeID, bool) {
	n := len(g.voters)
	pref := int(g.id) % n
	for i := range n {
		v := g.voters[(pref+i)%n]
		if v != e.cfg.Self && e.isUp(v) {
			return v, true
		}
		if !e.retiring && g.voter {
			break
		}
	}
	return 0, false
}

// renewDue reports whether the holder should renew now: every RenewEvery,
// and on the next Tick after a failed proposal.
func (e *Elector) renewDue(g *group, now time.Time) bool {
	since := now.Sub(g.lastSent)
	return since >= e.cfg.RenewEvery || (g.retry && since >= e.cfg.Tick)
}

// wantsStatus reports whether decide may act on g at now.
func (e *Elector) wantsStatus(g *group, now time.Time) bool {
	switch {
	case g.holding():
		return e.handOverTo(g, now) || (e.renewDue(g, now) && e.idle(g, now))
	case g.releasing(now):
		return e.idle(g, now)
	}
	if e.retiring {
		return false
	}
	if !g.voter {
		return false
	}
	at, ok := e.campaignAt(g, now)
	return ok && !now.Before(at) && e.majorityUp(g)
}

// decide picks the action for g at now, given its Paxos status.
func (e *Elector) decide(g *group, now time.Time, st paxos.GroupStatus, acts []Action) []Action {
	isMaster := st.Role == roleMaster
	if isMaster {
		g.needStatus = false
	}
	if !isMaster {
		g.masterBallot = paxos.Ballot{}
	} else if st.Ballot != g.masterBallot {
		// A new term of ours: the slots below Next hold everything phase 1
		// found, leases of other nodes included.
		g.masterBallot, g.boundary = st.Ballot, st.Next
	}
	self := e.cfg.Self
	switch {
	case g.holding():
		if e.handOverTo(g, now) {
			// Stop serving first, then propose the release. Send times are
			// forgotten, so a renewal still in flight that lands later is
			// not taken for ours and we cannot start serving on it again.
			g.givenUp, g.givenUpAt, g.lastHandover = true, now, now
			clear(g.sent)
			to, _ := e.successor(g)
			g.handTo = to
			return append(acts, e.propose(g, now, LeaseCmd{Holder: self, Release: true, To: to}))
		}
		if !e.renewDue(g, now) || !e.idle(g, now) {
			return acts
		}
		if isMaster {
			return append(acts, e.propose(g, now, LeaseCmd{Holder: self, Duration: e.cfg.Lease}))
		}
		// We hold the lease but lost Paxos mastership (a returning node
		// campaigned): win it back before the lease runs out.
		if st.Role == roleFollower && now.Sub(g.campaignedAt) >= e.cfg.CampaignDelay {
			g.campaignedAt = now
			return append(acts, Action{Kind: ActCampaign, Group: g.id})
		}
		return acts
	case g.releasing(now):
		if isMaster && e.idle(g, now) && now.Sub(g.givenUpAt) < e.cfg.Lease {
			return append(acts, e.propose(g, now, LeaseCmd{Holder: self, Release: true, To: g.handTo}))
		}
		return acts
	}
	if e.retiring || !g.voter {
		return acts // a node about to stop, or that does not vote, takes no group
	}
	at, ok := e.campaignAt(g, now)
	if !ok || now.Before(at) || !e.majorityUp(g) {
		return acts
	}
	toMe := g.cur.set && g.cur.cmd.Release && g.cur.cmd.To == self
	if !toMe && !isMaster && st.Master != 0 && st.Master != self && now.Before(at.Add(e.cfg.Lease)) {
		// Paxos still hears a master: most likely our log is behind and its
		// lease is on the way. Give it one Lease before we disrupt it.
		return acts
	}
	switch {
	case isMaster:
		// Propose only once every slot phase 1 found is applied, so that
		// every lease chosen before ours is known (and waited out) first.
		if st.Applied >= g.boundary && e.idle(g, now) {
			acts = append(acts, e.propose(g, now, LeaseCmd{Holder: self, Duration: e.cfg.Lease}))
		}
	case st.Role == roleFollower && (g.campaignedAt.IsZero() || now.Sub(g.campaignedAt) >= time.Duration(g.rank+1)*e.cfg.CampaignDelay+g.jitter):
		g.campaignedAt = now
		acts = append(acts, Action{Kind: ActCampaign, Group: g.id})
	}
	return acts
}

// propose fills in cmd's nonce (and duration) and records it as sent at now.
func (e *Elector) propose(g *group, now time.Time, cmd LeaseCmd) Action {
	cmd.Nonce = e.nextNonce(g)
	if !cmd.Release {
		// The holder's count starts here, before the proposal leaves.
		g.sent[cmd.Nonce] = now
		g.lastSent = now
	}
	g.outstanding, g.outstandingAt, g.retry = cmd.Nonce, now, false
	return Action{Kind: ActPropose, Group: g.id, Cmd: cmd}
}
