package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/replica"
)

func codeName(c wire.Code) string {
	switch c {
	case wire.CodeOK:
		return "ok"
	case wire.CodeQueued:
		return "queued"
	case wire.CodeWouldBlock:
		return "would_block"
	case wire.CodeNotMaster:
		return "not_master"
	case wire.CodeOverloaded:
		return "overloaded"
	case wire.CodeOutcomeUnknown:
		return "outcome_unknown"
	}
	return fmt.Sprintf("code_%d", c)
}

func fail(code wire.Code, format string, args ...any) *wire.Msg {
	return &wire.Msg{Code: code, Err: fmt.Sprintf(format, args...)}
}

// handle answers one request. A nil answer means the request answers itself
// later (none do yet). Every request speaks for the stream's identity
// (cs.who): authorize applies the access rules, and requests under a
// session are refused unless the session is the identity's own (the lock
// table checks that again when it applies the command).
func (s *Server) handle(ctx context.Context, cs *clientStream, req *wire.Msg) *wire.Msg {
	if bad := s.authorize(cs, req); bad != nil {
		return bad
	}
	caller := cs.who.Name
	switch req.Type {
	case wire.TypeHello, wire.TypeClusterStatus:
		return s.clusterStatus()
	case wire.TypeOpenSession:
		return s.openSession(ctx, cs, req)
	case wire.TypeCloseSession:
		if bad := s.checkGroup(req); bad != nil {
			return bad
		}
		all := ""
		admin, bad := s.checkOwner(cs, paxos.GroupID(req.Group), req.Session, &all, "close-session")
		if bad != nil {
			return bad
		}
		return s.lockOp(ctx, cs, req, lease.Command{Op: lease.OpCloseSession, Session: req.Session, Caller: caller, Admin: admin})
	case wire.TypeKeepAlive:
		return s.keepAlive(cs, req)
	case wire.TypeAcquire:
		return s.acquire(ctx, cs, req)
	case wire.TypeRelease:
		if err := s.checkName(req); err != nil {
			return err
		}
		admin, bad := s.checkOwner(cs, paxos.GroupID(req.Group), req.Session, &req.Name, "release")
		if bad != nil {
			return bad
		}
		return s.lockOp(ctx, cs, req, lease.Command{Op: lease.OpRelease, Session: req.Session, Name: req.Name, Token: req.Token, Caller: caller, Admin: admin})
	case wire.TypeCancelWait:
		if err := s.checkName(req); err != nil {
			return err
		}
		if _, bad := s.checkOwner(cs, paxos.GroupID(req.Group), req.Session, nil, "cancel-wait"); bad != nil {
			return bad
		}
		s.hub.removeWaiter(waitKey{g: paxos.GroupID(req.Group), session: req.Session, name: req.Name}, cs)
		return s.lockOp(ctx, cs, req, lease.Command{Op: lease.OpCancelWait, Session: req.Session, Name: req.Name, Caller: caller})
	case wire.TypeValidate, wire.TypeLockStatus:
		return s.read(req)
	case wire.TypeWatch:
		if err := s.checkName(req); err != nil {
			return err
		}
		if bad := cs.addWatch(req.Name, s.policy.Load().limitsFor(caller)); bad != nil {
			return bad
		}
		s.hub.watch(req.Name, cs, req.ReqID)
		return &wire.Msg{Code: wire.CodeOK}
	case wire.TypeSnapshot:
		return s.snapshot(ctx, cs, req) // backup.go
	case wire.TypeMembers:
		return s.groupMembership(ctx, req) // memberreq.go
	case wire.TypeChangeMembers:
		return s.changeMembership(ctx, cs, req)
	case wire.TypeUnwatch:
		s.hub.unwatch(req.Name, cs)
		cs.dropWatch(req.Name)
		return &wire.Msg{Code: wire.CodeOK}
	case wire.TypeWatchMasters:
		if bad := cs.addMasterWatch(s.policy.Load().limitsFor(caller)); bad != nil {
			return bad
		}
		resp := s.watchMasters(ctx, cs, req)
		if resp.Code != wire.CodeOK {
			cs.dropMasterWatch() // no stream was started
		}
		return resp
	}
	return fail(wire.CodeBadRequest, "unknown request type %d: is the client newer than this node?", req.Type)
}

func (s *Server) checkGroup(req *wire.Msg) *wire.Msg {
	if int(req.Group) >= s.cfg.Groups {
		return fail(wire.CodeBadRequest, "group %d does not exist: this cluster has %d groups", req.Group, s.cfg.Groups)
	}
	return nil
}

// checkName checks that a named request is sent to the group its name maps
// to, so a confused client cannot split one name over two token counters.
func (s *Server) checkName(req *wire.Msg) *wire.Msg {
	if req.Name == "" {
		return fail(wire.CodeBadRequest, "the lock name is empty")
	}
	if g := wire.GroupOf(req.Name, s.cfg.Groups); g != req.Group {
		return fail(wire.CodeBadRequest, "lock %q belongs to group %d, not %d: the client assumed another group count (this cluster has %d)", req.Name, g, req.Group, s.cfg.Groups)
	}
	return nil
}

func (s *Server) notMaster(g paxos.GroupID) *wire.Msg {
	m, _ := s.elector.Master(g, s.now())
	resp := &wire.Msg{Code: wire.CodeNotMaster, Group: uint32(g)}
	if m != 0 && m != s.cfg.ID {
		resp.Hint = uint32(m)
		resp.HintAddr = s.addr(m)
		resp.Err = fmt.Sprintf("node %d does not serve group %d; node %d does", s.cfg.ID, g, m)
	} else {
		resp.Err = fmt.Sprintf("group %d has no master right now (an election is under way); retry shortly", g)
	}
	return resp
}

// propose runs a lock-table command through Paxos on behalf of a client and
// returns what the table answered.
//
// The client's id is mapped into its identity's own id space
// (commandClient), so that its acknowledgements and retries only ever
// concern its own commands.
func (s *Server) propose(ctx context.Context, cs *clientStream, req *wire.Msg, lc lease.Command) (appliedResult, replica.Result, *wire.Msg) {
	if bad := s.checkGroup(req); bad != nil {
		return appliedResult{}, replica.Result{}, bad
	}
	if req.Client == 0 || req.Client>>63 != 0 || req.Seq == 0 {
		return appliedResult{}, replica.Result{}, fail(wire.CodeBadRequest, "a command needs a client id (1 to 2^63-1) and a sequence number above 0")
	}
	g := paxos.GroupID(req.Group)
	if !s.elector.Serving(g, s.now()) {
		return appliedResult{}, replica.Result{}, s.notMaster(g)
	}
	if bad := s.raiseFloorFirst(ctx, g); bad != nil { // floor.go
		return appliedResult{}, replica.Result{}, bad
	}
	lc.Now = s.now().UnixNano()
	client := commandClient(cs.who.Name, req.Client)
	if lc.Op == lease.OpOpenSession {
		lc.Client = client
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ProposeTimeout)
	defer cancel()
	start := time.Now()
	// Wait for the identity's turn (fairq.go) before anything reaches
	// Paxos: a refusal or a timeout here proposed nothing.
	fair := s.groups[g].fair
	ahead, err := fair.enterAhead(cctx, cs.who.Name, s.policy.Load().limitsFor(cs.who.Name).proposalsInFlight())
	if err != nil {
		var full errQueueFull
		if errors.As(err, &full) {
			return appliedResult{}, replica.Result{}, fail(wire.CodeOverloaded, "node %d, group %d: %v; nothing was proposed: retry after a short pause", s.cfg.ID, g, err)
		}
		return appliedResult{}, replica.Result{}, fail(wire.CodeOverloaded, "node %d, group %d: identity %s's commands waited %v for their turn and this one was not proposed; retry after a short pause", s.cfg.ID, g, cs.who.Name, time.Since(start).Round(time.Millisecond))
	}
	defer fair.leave(cs.who.Name)
	sole := cs.idst.enterProposal()
	defer cs.idst.leaveProposal()
	others := int(s.proposing.Add(1) - 1)
	defer s.proposing.Add(-1)
	var propose func(context.Context, paxos.GroupID, paxos.Command) (replica.Result, error)
	switch proposeKind(ahead, sole, others) {
	case proposeContended:
		propose = s.replica.ProposeContended
	case proposeAhead:
		propose = s.replica.ProposeAhead
	default:
		propose = s.replica.Propose
	}
	res, err := propose(cctx, g, paxos.Command{ID: paxos.CommandID{Client: client, Seq: req.Seq}, Ack: req.Ack, Data: lockCommand(lc)})
	if err != nil {
		if _, ok := paxos.IsNotMaster(err); ok {
			return appliedResult{}, res, s.notMaster(g)
		}
		switch {
		case errors.Is(err, paxos.ErrTooLarge):
			return appliedResult{}, res, fail(wire.CodeLimit, "the request is too large for one Paxos slot: %v; keep less metadata with the lock", err)
		case errors.Is(err, paxos.ErrOverloaded):
			return appliedResult{}, res, fail(wire.CodeOverloaded, "node %d is overloaded: %v; retry after a short pause", s.cfg.ID, err)
		case errors.Is(err, replica.ErrForgotten):
			return appliedResult{}, res, fail(wire.CodeStale, "group %d: %v", g, err)
		case errors.Is(err, replica.ErrOutcomeUnknown):
			return appliedResult{}, res, fail(wire.CodeOutcomeUnknown, "group %d did not decide within %v; retry with the same client id and sequence to learn the outcome", g, s.cfg.ProposeTimeout)
		}
		return appliedResult{}, res, fail(wire.CodeInternal, "propose in group %d: %v", g, err)
	}
	s.observePropose(g, time.Since(start))
	ar, err := decodeResult(res.Value)
	if err != nil {
		return ar, res, fail(wire.CodeInternal, "group %d slot %d: %v", g, res.Slot, err)
	}
	return ar, res, nil
}

func (s *Server) lockOp(ctx context.Context, cs *clientStream, req *wire.Msg, lc lease.Command) *wire.Msg {
	ar, res, bad := s.propose(ctx, cs, req, lc)
	if bad != nil {
		return bad
	}
	return resultMsg(ar, res)
}

func resultMsg(ar appliedResult, res replica.Result) *wire.Msg {
	m := &wire.Msg{Code: ar.code, Session: ar.session, Token: ar.token, Err: ar.err, Slot: res.Slot, Group: uint32(res.Group)}
	if res.Duplicate {
		m.Flags |= wire.FlagDuplicate
	}
	return m
}

func (s *Server) openSession(ctx context.Context, cs *clientStream, req *wire.Msg) *wire.Msg {
	want := lease.OwnerCounts{Sessions: 1}
	if refusal := cs.idst.reserve(cs.who.Name, s.policy.Load().limitsFor(cs.who.Name), want); refusal != "" {
		return fail(wire.CodeLimit, "%s", refusal)
	}
	defer cs.idst.unreserve(want)
	ar, res, bad := s.propose(ctx, cs, req, lease.Command{Op: lease.OpOpenSession, Client: req.Client, TTL: req.TTL, Caller: cs.who.Name})
	if bad != nil {
		return bad
	}
	// The session clock learned of the session when it was applied
	// (trackSessions), on every node.
	return resultMsg(ar, res)
}

func (s *Server) acquire(ctx context.Context, cs *clientStream, req *wire.Msg) *wire.Msg {
	if err := s.checkName(req); err != nil {
		return err
	}
	k := waitKey{g: paxos.GroupID(req.Group), session: req.Session, name: req.Name}
	wait := req.Flags&wire.FlagWait != 0
	gs := s.groups[k.g]
	gs.mu.Lock()
	lim := gs.table.Limits()
	gs.mu.Unlock()
	if len(req.Metadata) > lim.MaxMetadataBytes {
		return fail(wire.CodeLimit, "metadata is %d bytes, too large: the limit is %d bytes (MaxMetadataBytes); keep less with the lock", len(req.Metadata), lim.MaxMetadataBytes)
	}
	if len(req.Name) > lim.MaxNameBytes {
		return fail(wire.CodeLimit, "the lock name is %d bytes, too large: the limit is %d bytes (MaxNameBytes)", len(req.Name), lim.MaxNameBytes)
	}
	owner, ok := s.sessionOwner(k.g, req.Session)
	if ok && owner != "" && owner != cs.who.Name {
		return permission("permission denied: session %d belongs to %s; you are %s", req.Session, owner, cs.who.Name)
	}
	want := lease.OwnerCounts{Held: 1}
	if wait {
		want.Waiting = 1
	}
	if refusal := cs.idst.reserve(cs.who.Name, s.policy.Load().limitsFor(cs.who.Name), want); refusal != "" {
		return fail(wire.CodeLimit, "%s", refusal)
	}
	defer cs.idst.unreserve(want)
	if wait && ok {
		// Register before proposing, so that a grant applied right after
		// the queueing cannot be missed. Only for a session this node
		// knows to be the caller's own: a waiter entry is never repointed
		// at another identity's stream.
		s.hub.addWaiter(k, subscription{st: cs, reqID: req.ReqID})
	}
	ar, res, bad := s.propose(ctx, cs, req, lease.Command{Op: lease.OpAcquire, Session: req.Session, Name: req.Name,
		Shared: req.Flags&wire.FlagShared != 0, Wait: wait, Metadata: req.Metadata, LockDelay: req.LockDelay, Caller: cs.who.Name})
	if bad != nil {
		s.hub.removeWaiter(k, cs)
		return bad
	}
	if ar.code == wire.CodeQueued && res.Duplicate {
		// A retried acquire gets the first outcome, "queued"; the lock may
		// have been granted since, with the grant pushed to a connection
		// that is gone. Answer with the grant, if there is one.
		gs.mu.Lock()
		info, ok := gs.table.Lock(req.Name)
		gs.mu.Unlock()
		for _, h := range info.Holders {
			if ok && h.Session == req.Session {
				ar.code, ar.token = wire.CodeOK, h.Token
			}
		}
	}
	if ar.code != wire.CodeQueued {
		s.hub.removeWaiter(k, cs)
	}
	return resultMsg(ar, res)
}

// keepAlive records that the client is alive, for every session it names
// in a group this node serves. Keep-alives do not go through Paxos: the
// master's clock decides expiry, and a new master grants a grace period.
//
// A session of another identity gets CodePermission, and its clock is not
// touched.
func (s *Server) keepAlive(cs *clientStream, req *wire.Msg) *wire.Msg {
	now := s.now()
	resp := &wire.Msg{Code: wire.CodeOK, KeepAlives: make([]wire.KeepAliveItem, 0, len(req.KeepAlives))}
	for _, it := range req.KeepAlives {
		g := paxos.GroupID(it.Group)
		item := wire.KeepAliveItem{Group: it.Group, Session: it.Session}
		switch {
		case int(it.Group) >= s.cfg.Groups:
			item.Code = wire.CodeBadRequest
		case !s.elector.Serving(g, now):
			item.Code = wire.CodeNotMaster
		default:
			gs := s.groups[g]
			gs.mu.Lock()
			si, ok := gs.table.Session(it.Session)
			gs.mu.Unlock()
			switch {
			case ok && si.Owner != "" && si.Owner != cs.who.Name:
				item.Code = wire.CodePermission
				if resp.Err == "" {
					resp.Err = fmt.Sprintf("permission denied: session %d belongs to %s; you are %s", it.Session, si.Owner, cs.who.Name)
				}
			case ok:
				s.sessions.seen(g, it.Session, si.TTL, now)
				item.Code = wire.CodeOK
			default:
				item.Code = wire.CodeSessionUnknown
			}
		}
		resp.KeepAlives = append(resp.KeepAlives, item)
	}
	return resp
}

// read answers Validate and LockStatus from the lock table. The group's
// master answers while its lease holds, without a Paxos round: every command
// chosen before its lease was applied before it started serving, and every
// later one went through it. Other nodes answer only when the caller accepts
// a possibly stale answer.
func (s *Server) read(req *wire.Msg) *wire.Msg {
	if err := s.checkName(req); err != nil {
		return err
	}
	g := paxos.GroupID(req.Group)
	if req.Flags&wire.FlagStale == 0 && !s.elector.Serving(g, s.now()) {
		return s.notMaster(g)
	}
	gs := s.groups[g]
	gs.mu.Lock()
	defer gs.mu.Unlock()
	resp := &wire.Msg{Code: wire.CodeOK, Group: req.Group, Name: req.Name}
	if req.Type == wire.TypeValidate {
		if gs.table.Validate(req.Name, req.Token) {
			resp.Flags |= wire.FlagValid
		}
		return resp
	}
	info, ok := gs.table.Lock(req.Name)
	if !ok {
		return resp
	}
	resp.Waiters = uint32(info.Waiters)
	if len(info.Holders) > 0 {
		resp.Flags |= wire.FlagHeld
	}
	for _, h := range info.Holders {
		resp.Holders = append(resp.Holders, wire.HolderItem{Session: h.Session, Token: h.Token, Shared: info.Shared, Metadata: h.Metadata})
	}
	return resp
}

// How a client command enters Paxos (proposeKind).
const (
	proposeQueued    = iota // replica.Propose: behind the group's queue
	proposeAhead            // replica.ProposeAhead: a light identity's command
	proposeContended        // replica.ProposeContended: the same, on a busy node
)

// proposeKind decides how a command enters Paxos. ahead: the fair queue
// found its identity light in the group (fairQueue.enterAhead); sole: it is
// the identity's only command in flight on the node (enterProposal);
// others: how many commands of any identity are in flight on the node
// besides it. A light, sole command goes ahead of the queue. When more than
// aheadInFlight other commands are in flight besides it, which a light
// identity alone never causes but a heavy one does, it is contended too:
// the nodes that write its slot then space their other synced writes for a
// while (replica.Config.YieldGap), so that the light identity's next write
// finds the disk free. An identity that is alone on the node, light or
// heavy, never makes others yield to it.
func proposeKind(ahead, sole bool, others int) int {
	switch {
	case !ahead || !sole:
		return proposeQueued
	case others > aheadInFlight:
		return proposeContended
	}
	return proposeAhead
}
