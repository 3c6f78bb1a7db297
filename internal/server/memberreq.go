package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/paxos"
)

// Membership requests (wire.TypeMembers, wire.TypeChangeMembers; admin
// only, see authorize). Both are answered by the group's Paxos master,
// which alone knows how far each member has caught up and alone may
// propose a change; any other node answers with the usual redirect.

// memberQueryTimeout bounds one read of the replica for a request.
const memberQueryTimeout = 5 * time.Second

// groupMembership answers wire.TypeMembers: group g's newest
// configuration with each member's progress, as its master knows it.
func (s *Server) groupMembership(ctx context.Context, req *wire.Msg) *wire.Msg {
	if bad := s.checkGroup(req); bad != nil {
		return bad
	}
	g := paxos.GroupID(req.Group)
	ctx, cancel := context.WithTimeout(ctx, memberQueryTimeout)
	defer cancel()
	st, err := s.replica.Status(ctx, g)
	if err != nil {
		return fail(wire.CodeUnavailable, "node %d cannot read group %d: %v; retry shortly", s.cfg.ID, g, err)
	}
	if st.Role != "master" {
		return s.notMaster(g)
	}
	ms, err := s.replica.Membership(ctx, g)
	if err != nil {
		return fail(wire.CodeUnavailable, "node %d cannot read group %d's membership: %v; retry shortly", s.cfg.ID, g, err)
	}
	prog, err := s.replica.Progress(ctx, g)
	if err != nil {
		return fail(wire.CodeUnavailable, "node %d cannot read group %d's progress: %v; retry shortly", s.cfg.ID, g, err)
	}
	resp := &wire.Msg{Code: wire.CodeOK, Group: req.Group, Node: uint32(s.cfg.ID), Slot: st.Commit}
	if len(ms.Epochs) > 0 {
		resp.Epoch = ms.Epochs[len(ms.Epochs)-1].From
	}
	if resp.Epoch > st.Commit {
		resp.Flags |= wire.FlagPending
	}
	for _, m := range ms.Latest() {
		addr := m.Addr
		if addr == "" {
			addr = s.addr(m.ID)
		}
		resp.Members = append(resp.Members, wire.MemberItem{ID: uint32(m.ID), Addr: addr, Voter: m.Voter,
			Progress: prog[m.ID], Up: m.ID == s.cfg.ID || s.peerUp(m.ID)})
	}
	return resp
}

// changeMembership answers wire.TypeChangeMembers: it asks the core to
// propose one change in one group. CodeOK means queued, not in force.
func (s *Server) changeMembership(ctx context.Context, cs *clientStream, req *wire.Msg) *wire.Msg {
	if bad := s.checkGroup(req); bad != nil {
		return bad
	}
	g := paxos.GroupID(req.Group)
	c, bad := changeOf(req)
	if bad != nil {
		return bad
	}
	ctx, cancel := context.WithTimeout(ctx, memberQueryTimeout)
	defer cancel()
	err := s.replica.ProposeChange(ctx, g, c)
	switch {
	case err == nil:
		s.log.Warn("membership change proposed", "group", g, "change", c.String(), "admin", cs.who.Name)
		return &wire.Msg{Code: wire.CodeOK, Group: req.Group, Node: uint32(s.cfg.ID)}
	case isNotMaster(err):
		return s.notMaster(g)
	case errors.Is(err, paxos.ErrChangePending):
		return fail(wire.CodeChangePending, "another membership change is in progress in group %d; retry when it is in force (lockctl members list shows it)", g)
	case errors.Is(err, paxos.ErrNotCaughtUp):
		return fail(wire.CodeNotCaughtUp, "node %d has not caught up in group %d yet (%v); retry once it has (lockctl members add waits for it)", c.Node, g, err)
	case errors.Is(err, paxos.ErrBadChange):
		return fail(wire.CodeInvalid, "%v; lockctl members list shows the group's members", err)
	}
	return fail(wire.CodeUnavailable, "node %d could not propose %s in group %d: %v; retry shortly", s.cfg.ID, c, g, err)
}

func isNotMaster(err error) bool {
	_, ok := paxos.IsNotMaster(err)
	return ok
}

// changeOf checks a change request and returns the change it asks for.
func changeOf(req *wire.Msg) (paxos.Change, *wire.Msg) {
	if len(req.Members) != 1 {
		return paxos.Change{}, fail(wire.CodeBadRequest, "a membership change names exactly one node, this one names %d", len(req.Members))
	}
	m := req.Members[0]
	if m.ID == 0 {
		return paxos.Change{}, fail(wire.CodeBadRequest, "node id 0 is not a node: ids start at 1")
	}
	c := paxos.Change{Node: paxos.NodeID(m.ID)}
	switch req.ChangeOp {
	case wire.ChangeAddLearner:
		c.Op, c.Addr = paxos.AddLearner, m.Addr
		if err := checkNodeAddr(m.Addr); err != nil {
			return paxos.Change{}, fail(wire.CodeBadRequest, "node %d: %v", m.ID, err)
		}
	case wire.ChangePromote:
		c.Op = paxos.Promote
	case wire.ChangeRemove:
		c.Op = paxos.Remove
	default:
		return paxos.Change{}, fail(wire.CodeBadRequest, "unknown membership change kind %d (want 1 add, 2 promote, 3 remove): is the client newer than this node?", req.ChangeOp)
	}
	return c, nil
}

// maxNodeAddr is the longest address a change carries (the core's bound).
const maxNodeAddr = 255

// checkNodeAddr checks the address of a node to add: HOST:PORT, as the
// node's --listen / --peers entry.
func checkNodeAddr(addr string) error {
	if addr == "" {
		return errors.New("adding a node needs its address (HOST:PORT, as in its --peers entry)")
	}
	if len(addr) > maxNodeAddr {
		return fmt.Errorf("address of %d bytes, at most %d", len(addr), maxNodeAddr)
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" || port == "0" {
		return fmt.Errorf("address %q is not HOST:PORT with a port", addr)
	}
	return nil
}
