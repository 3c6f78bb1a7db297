package server

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// The observer turns what the node learns into what an operator sees: one
// INFO line per master change of every group, per peer joining or leaving
// the mesh, per session a master expires; and the metrics of metrics_ops.go.

// Peer probes: every probeInterval this node sends each peer a probe frame on
// the peer mesh, and the peer answers at once. A peer that has not answered
// for probeSilence (or whose connection is down) has left the mesh: QUIC
// itself notices a dead peer only after its idle timeout (15s).
const (
	probeMarker   = 0xfc // first byte of a probe frame (Paxos frames start with the codec version; 0xfd is a snapshot transfer, 0xfe hello, 0xff a batch)
	probePing     = 1
	probePong     = 2
	probeInterval = 200 * time.Millisecond
	probeSilence  = time.Second
	// maxTracked bounds the grant and wait records kept for the lock
	// histograms; past it they are dropped (the histograms miss those).
	maxTracked = 1 << 20
)

// observer is the node's view for operators. Its zero value is not usable:
// newObserver makes it.
type observer struct {
	s     *Server
	depth int // lock-name prefix depth of the per-lock metrics

	mu     sync.Mutex
	groups []groupView
	peers  map[paxos.NodeID]*peerView

	// Lock tracking for the histograms, by table time (unix ns), guarded by
	// lmu: Apply runs on the replica's goroutine.
	lmu      sync.Mutex
	grantAt  map[grantKey]int64
	queuedAt map[queueKey]int64
	freedAt  map[nameKey]int64

	health healthCache // health.go
}

type groupView struct {
	master    paxos.NodeID
	last      paxos.NodeID // the last master other than none
	epoch     uint64
	cause     election.Cause
	to        paxos.NodeID
	since     time.Time     // when the current master (or none) began, by this node's clock
	noneSince time.Time     // start of the current time without a master; zero while there is one
	noneTotal time.Duration // accumulated time without a master, ended streaks only
	known     bool
}

type peerView struct {
	state   string // "unknown", "up", "down"
	lastAns time.Time
	rtt     time.Duration
	since   time.Time
	sent    map[uint64]time.Time
	seq     uint64
}

type grantKey struct {
	g     paxos.GroupID
	token uint64
}

type queueKey struct {
	g       paxos.GroupID
	session uint64
	name    string
}

type nameKey struct {
	g    paxos.GroupID
	name string
}

func newObserver(s *Server, depth int) *observer {
	o := &observer{s: s, depth: depth, groups: make([]groupView, s.cfg.Groups), peers: map[paxos.NodeID]*peerView{},
		grantAt: map[grantKey]int64{}, queuedAt: map[queueKey]int64{}, freedAt: map[nameKey]int64{}}
	now := time.Now()
	for i := range o.groups {
		o.groups[i].noneSince, o.groups[i].since = now, now
	}
	for _, id := range s.nodeIDs() {
		if id != s.cfg.ID {
			o.peers[id] = &peerView{state: "unknown", since: now, sent: map[uint64]time.Time{}}
			s.ops.peerUp.WithLabelValues(nodeLabel(id)).Set(0)
		}
	}
	for g := range o.groups {
		l := groupLabel(paxos.GroupID(g))
		s.ops.hasMaster.WithLabelValues(l).Set(0)
		s.ops.isMaster.WithLabelValues(l).Set(0)
		s.ops.master.WithLabelValues(l).Set(0)
		s.ops.masterChanges.WithLabelValues(l)
	}
	return o
}

// run follows the elector's events and probes the peers until ctx ends.
func (o *observer) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { o.probeLoop(ctx) })
	o.eventLoop(ctx)
	wg.Wait()
}

func (o *observer) eventLoop(ctx context.Context) {
	var since map[paxos.GroupID]uint64
	for ctx.Err() == nil {
		events, cancel, err := o.s.elector.Subscribe(since)
		if err != nil {
			var re *election.ResyncError
			if errors.As(err, &re) {
				// Too far behind: take the present state and go on from it.
				for _, gm := range re.Current {
					o.onEvent(election.Event{Group: gm.Group, Epoch: gm.Epoch, Seq: gm.Seq, Master: gm.Master, Cause: election.CauseNone}, true)
				}
				since = nil
				continue
			}
			o.s.log.Error("master-change events unavailable", "err", err)
			return
		}
		since = o.follow(ctx, events)
		cancel()
	}
}

// follow handles events until ctx ends or the subscription is dropped; it
// returns the epochs to subscribe again from.
func (o *observer) follow(ctx context.Context, events <-chan election.Event) map[paxos.GroupID]uint64 {
	first := map[paxos.GroupID]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok || ev.Err != nil {
				o.s.warn.Warn(o.s.log, "observer/resubscribe", "master-change log fell behind; subscribing again")
				o.mu.Lock()
				since := map[paxos.GroupID]uint64{}
				for g, gv := range o.groups {
					if gv.known {
						since[paxos.GroupID(g)] = gv.epoch
					}
				}
				o.mu.Unlock()
				return since
			}
			o.onEvent(ev, !first[ev.Group])
			first[ev.Group] = true
		}
	}
}

// why says in words why a group's master changed, from the cause of the
// event that ended the previous master.
func why(c election.Cause, to paxos.NodeID) string {
	switch c {
	case election.CauseExpired:
		return "lease expired"
	case election.CauseReleased:
		if to != 0 {
			return "handover"
		}
		return "stepped down"
	case election.CauseRenewed:
		return "lease renewed after it was counted out"
	case election.CauseLease:
		return "lease taken over"
	}
	return "first master"
}

// onEvent logs and counts one master change. initial marks the first event
// of a subscription: the group's state as it is, not a change.
func (o *observer) onEvent(ev election.Event, initial bool) {
	if int(ev.Group) >= len(o.groups) {
		return
	}
	now := time.Now()
	o.mu.Lock()
	gv := &o.groups[ev.Group]
	if gv.known && ev.Epoch <= gv.epoch {
		o.mu.Unlock()
		return // replayed after a resubscription
	}
	old, prev := gv.master, *gv
	changed := old != ev.Master || !gv.known
	gv.epoch, gv.known = ev.Epoch, true
	if changed {
		gv.master, gv.since = ev.Master, now
		if old != 0 {
			gv.last = old
		}
	}
	if ev.Master == 0 {
		gv.cause, gv.to = ev.Cause, ev.To
		if gv.noneSince.IsZero() {
			gv.noneSince = now
		}
	} else if !gv.noneSince.IsZero() {
		gv.noneTotal += now.Sub(gv.noneSince)
		gv.noneSince = time.Time{}
	}
	masterless := time.Duration(0)
	if ev.Master != 0 && !prev.noneSince.IsZero() {
		masterless = now.Sub(prev.noneSince)
	}
	o.mu.Unlock()

	self := o.s.cfg.ID
	l := groupLabel(ev.Group)
	m := o.s.ops
	m.master.WithLabelValues(l).Set(float64(ev.Master))
	m.epoch.WithLabelValues(l).Set(float64(ev.Epoch))
	m.hasMaster.WithLabelValues(l).Set(b2f(ev.Master != 0))
	m.isMaster.WithLabelValues(l).Set(b2f(ev.Master == self))
	if !changed {
		if ev.Cause == election.CauseRenewed {
			o.s.log.Info("group master lease renewed", "group", ev.Group, "master", ev.Master, "epoch", ev.Epoch, "seq", ev.Seq)
		}
		return
	}
	if initial && !prev.known {
		if ev.Master != 0 {
			o.s.log.Info("group master at start", "group", ev.Group, "master", ev.Master, "epoch", ev.Epoch, "seq", ev.Seq, "this_node", ev.Master == self)
		}
		return
	}
	m.masterChanges.WithLabelValues(l).Inc()
	if ev.Master == 0 {
		args := []any{"group", ev.Group, "old", old, "new", 0, "epoch", ev.Epoch, "seq", ev.Seq, "why", why(ev.Cause, ev.To)}
		if ev.Cause == election.CauseReleased && ev.To != 0 {
			args = append(args, "to", ev.To)
		}
		o.s.log.Info("group master changed", args...)
		return
	}
	oldMaster := old
	if oldMaster == 0 {
		oldMaster = prev.last
	}
	args := []any{"group", ev.Group, "old", oldMaster, "new", ev.Master, "epoch", ev.Epoch, "seq", ev.Seq,
		"why", why(prev.cause, prev.to), "this_node", ev.Master == self}
	if masterless > 0 {
		args = append(args, "without_master", masterless.Round(time.Millisecond))
	}
	o.s.log.Info("group master changed", args...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// masterless returns how long group g has been without a master now, and in
// all since the node started.
func (o *observer) masterless(g paxos.GroupID, now time.Time) (cur, total time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if int(g) >= len(o.groups) {
		return 0, 0
	}
	gv := o.groups[g]
	if !gv.noneSince.IsZero() {
		cur = now.Sub(gv.noneSince)
	}
	return cur, gv.noneTotal + cur
}

// isMaster reports whether this node is g's master by the last event.
func (o *observer) isMaster(g paxos.GroupID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int(g) < len(o.groups) && o.groups[g].master == o.s.cfg.ID
}

// groupMaster is g's master, its epoch and since when, as the events said.
func (o *observer) groupMaster(g paxos.GroupID) (paxos.NodeID, uint64, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if int(g) >= len(o.groups) {
		return 0, 0, time.Time{}
	}
	gv := o.groups[g]
	return gv.master, gv.epoch, gv.since
}

// PeerState is one peer as the probes see it.
type PeerState struct {
	State string        // "up", "down" or "unknown" (no answer yet)
	RTT   time.Duration // of the last answered probe
	Since time.Time     // when State began
}

// addPeer starts probing peer id, a node added by a membership change.
func (o *observer) addPeer(id paxos.NodeID) {
	if o == nil || id == o.s.cfg.ID {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.peers[id] != nil {
		return
	}
	o.peers[id] = &peerView{state: "unknown", since: time.Now(), sent: map[uint64]time.Time{}}
	o.s.ops.peerUp.WithLabelValues(nodeLabel(id)).Set(0)
}

// peerState returns what the probes say of peer n.
func (o *observer) peerState(n paxos.NodeID) PeerState {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.peers[n]
	if p == nil {
		return PeerState{State: "unknown"}
	}
	return PeerState{State: p.state, RTT: p.rtt, Since: p.since}
}

// peerAlive reports whether peer n answered a probe lately over a live
// connection.
func (o *observer) peerAlive(n paxos.NodeID) bool {
	if n == o.s.cfg.ID {
		return true
	}
	return o.peerState(n).State == "up"
}

func (o *observer) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			o.probeRound(now)
		}
	}
}

func (o *observer) probeRound(now time.Time) {
	connected := map[paxos.NodeID]bool{}
	for _, ps := range o.s.qnode.Stats() {
		connected[paxos.NodeID(ps.ID)] = ps.Connected
	}
	type change struct {
		id      paxos.NodeID
		state   string
		reason  string
		silence time.Duration
	}
	var changes []change
	send := map[paxos.NodeID]uint64{}
	o.mu.Lock()
	for id, p := range o.peers {
		p.seq++
		p.sent[p.seq] = now
		for seq, at := range p.sent {
			if now.Sub(at) > 2*probeSilence {
				delete(p.sent, seq)
			}
		}
		send[id] = p.seq
		silent := p.lastAns.IsZero() || now.Sub(p.lastAns) > probeSilence
		switch {
		case p.state == "up" && !connected[id]:
			p.state, p.since = "down", now
			changes = append(changes, change{id: id, state: "down", reason: "connection closed", silence: now.Sub(p.lastAns)})
		case p.state == "up" && silent:
			p.state, p.since = "down", now
			changes = append(changes, change{id: id, state: "down", reason: "no answer to probes", silence: now.Sub(p.lastAns)})
		case p.state == "unknown" && now.Sub(p.since) > 2*probeSilence:
			p.state, p.since = "down", now
			changes = append(changes, change{id: id, state: "down", reason: "never answered"})
		}
	}
	o.mu.Unlock()
	for _, c := range changes {
		o.peerChanged(c.id, c.state, c.reason, c.silence, 0)
	}
	for id, seq := range send {
		f := binary.AppendUvarint([]byte{probeMarker, probePing}, seq)
		if o.s.qnode.Send(quicnet.NodeID(id), 0, f) == nil {
			o.s.ops.peerOut.Add(float64(len(f)))
		}
	}
}

func (o *observer) peerChanged(id paxos.NodeID, state, reason string, silence, rtt time.Duration) {
	l := nodeLabel(id)
	o.s.ops.peerChanges.WithLabelValues(l, state).Inc()
	o.s.ops.peerUp.WithLabelValues(l).Set(b2f(state == "up"))
	addr := o.s.addr(id)
	if state == "up" {
		o.s.log.Info("peer joined the mesh", "peer", id, "addr", addr, "rtt", rtt)
		return
	}
	args := []any{"peer", id, "addr", addr, "why", reason}
	if silence > 0 && silence < time.Hour {
		args = append(args, "silent_for", silence.Round(time.Millisecond))
	}
	o.s.log.Info("peer left the mesh", args...)
}

// onProbe handles a probe frame from peer from: answers a ping, takes the
// round trip of a pong.
func (o *observer) onProbe(from paxos.NodeID, b []byte) {
	if o == nil || len(b) < 3 {
		return
	}
	switch b[1] {
	case probePing:
		pong := append([]byte{probeMarker, probePong}, b[2:]...)
		if o.s.qnode.Send(quicnet.NodeID(from), 0, pong) == nil {
			o.s.ops.peerOut.Add(float64(len(pong)))
		}
	case probePong:
		seq, n := binary.Uvarint(b[2:])
		if n <= 0 {
			return
		}
		now := time.Now()
		o.mu.Lock()
		p := o.peers[from]
		if p == nil {
			o.mu.Unlock()
			return
		}
		at, ok := p.sent[seq]
		if !ok {
			o.mu.Unlock()
			return
		}
		delete(p.sent, seq)
		rtt := now.Sub(at)
		p.lastAns, p.rtt = now, rtt
		joined := p.state != "up"
		if joined {
			p.state, p.since = "up", now
		}
		o.mu.Unlock()
		o.s.ops.peerRTT.WithLabelValues(nodeLabel(from)).Set(rtt.Seconds())
		if joined {
			o.peerChanged(from, "up", "", 0, rtt)
		}
	}
}

// applied is called by Apply for every lock-table command, with the
// session's state before the command when it expires a session, and the
// result. It logs the expiries a master decided and keeps the per-lock
// metrics; now is the command's table time.
func (o *observer) applied(g paxos.GroupID, lc lease.Command, expiring lease.SessionInfo, res lease.Result) {
	if o == nil {
		return // a Server made without New, in tests
	}
	master := o.isMaster(g)
	now := lc.Now
	o.lmu.Lock()
	if len(o.grantAt) > maxTracked || len(o.queuedAt) > maxTracked || len(o.freedAt) > maxTracked {
		clear(o.grantAt)
		clear(o.queuedAt)
		clear(o.freedAt)
	}
	if lc.Op == lease.OpAcquire && res.Code == lease.CodeQueued {
		o.queuedAt[queueKey{g, lc.Session, lc.Name}] = now
	}
	var released []string
	for _, ev := range res.Events {
		pfx := ""
		if master {
			pfx = o.s.ops.prefix(ev.Name, o.depth)
		}
		switch ev.Kind {
		case lease.EventGranted:
			wk := queueKey{g, ev.Session, ev.Name}
			if at, ok := o.queuedAt[wk]; ok {
				delete(o.queuedAt, wk)
				if master {
					o.s.ops.wait.WithLabelValues(pfx).Observe(secs(now - at))
				}
			}
			nk := nameKey{g, ev.Name}
			if at, ok := o.freedAt[nk]; ok {
				delete(o.freedAt, nk)
				if master {
					o.s.ops.handover.WithLabelValues(pfx).Observe(secs(now - at))
				}
			}
			o.grantAt[grantKey{g, ev.Token}] = now
			if master {
				o.s.ops.grants.WithLabelValues(pfx).Inc()
			}
		case lease.EventReleased, lease.EventExpired:
			gk := grantKey{g, ev.Token}
			if at, ok := o.grantAt[gk]; ok {
				delete(o.grantAt, gk)
				if master {
					o.s.ops.hold.WithLabelValues(pfx).Observe(secs(now - at))
				}
			}
			o.freedAt[nameKey{g, ev.Name}] = now
			if ev.Kind == lease.EventExpired {
				released = append(released, ev.Name)
				if master {
					o.s.ops.lockExpiries.WithLabelValues(pfx).Inc()
				}
			}
		case lease.EventCanceled:
			delete(o.queuedAt, queueKey{g, ev.Session, ev.Name})
		}
	}
	// A lock freed with nobody left waiting is not handed over: forget it,
	// so that the next grant does not count as a hand-over. (Apply calls
	// this with the group's table locked.)
	for _, ev := range res.Events {
		if ev.Kind != lease.EventReleased && ev.Kind != lease.EventExpired {
			continue
		}
		nk := nameKey{g, ev.Name}
		if _, ok := o.freedAt[nk]; !ok {
			continue
		}
		if info, ok := o.s.groups[g].table.Lock(ev.Name); !ok || info.Waiters == 0 {
			delete(o.freedAt, nk)
		}
	}
	o.lmu.Unlock()

	switch lc.Op {
	case lease.OpExpireSession:
		if res.Code != lease.CodeOK || expiring.ID == 0 {
			return
		}
		if master {
			o.s.ops.sessionsEnd.WithLabelValues("expired").Inc()
		}
		args := []any{"group", g, "session", expiring.ID, "owner", expiring.Owner, "ttl", expiring.TTL,
			"locks_released", len(released)}
		if len(released) > 0 {
			if len(released) > 20 {
				released = append(released[:20:20], "...")
			}
			args = append(args, "locks", released)
		}
		if expiring.Waiting > 0 {
			args = append(args, "waits_canceled", expiring.Waiting)
		}
		if master {
			o.s.log.Info("session expired", args...)
		} else {
			o.s.log.Debug("session expired (decided by the group's master)", args...)
		}
	case lease.OpCloseSession:
		if master && res.Code == lease.CodeOK {
			o.s.ops.sessionsEnd.WithLabelValues("closed").Inc()
		}
	}
}

func secs(ns int64) float64 { return float64(max(ns, 0)) / 1e9 }

func nodeLabel(n paxos.NodeID) string { return strconv.FormatUint(uint64(n), 10) }

// The byte and connection counters; like every hook the server calls, they
// do nothing on a nil observer (a Server made without New, in tests).

func (o *observer) countPeerIn(n int) {
	if o != nil {
		o.s.ops.peerIn.Add(float64(n))
	}
}

func (o *observer) countClient(in, out int) {
	if o == nil {
		return
	}
	if in > 0 {
		o.s.ops.clientIn.Add(float64(in))
	}
	if out > 0 {
		o.s.ops.clientOut.Add(float64(out))
	}
}

func (o *observer) clientConn(delta int) {
	if o != nil {
		o.s.ops.clientConns.Add(float64(delta))
	}
}
