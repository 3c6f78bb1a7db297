package server

import (
	"context"
	"errors"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/replica"
)

// The token floor of a group restored from a backup (restore.go explains
// why and why the clock is a safe floor). While the floor is pending, the
// master proposes nothing else for the group's lock table: client commands
// wait for the floor (raiseFloorFirst), and expiry and ticks wait until
// the next round (expireGroup). A command proposed once the floor is
// applied here takes a later slot than the floor, so every grant after a
// restore comes after a floor in the log, on every node.

// floorPending reports whether group g still waits for its token floor.
func (s *Server) floorPending(g paxos.GroupID) bool {
	gs := s.groups[g]
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.floorPending
}

// floorCommand is the floor a master proposes at now: its clock in
// microseconds.
func floorCommand(now time.Time) lease.Command {
	return lease.Command{Op: lease.OpRaiseTokenFloor, Token: uint64(now.UnixMicro())}
}

// raiseFloorFirst proposes group g's token floor and waits until it is
// applied, when it is pending; nil when the group may go on.
func (s *Server) raiseFloorFirst(ctx context.Context, g paxos.GroupID) *wire.Msg {
	if !s.floorPending(g) {
		return nil
	}
	now := time.Now()
	lc := floorCommand(now)
	lc.Now = now.UnixNano()
	seq, ack := s.ownIDs.next()
	defer s.ownIDs.done(seq)
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ProposeTimeout)
	defer cancel()
	_, err := s.replica.Propose(cctx, g, paxos.Command{ID: paxos.CommandID{Client: s.ownIDs.client, Seq: seq}, Ack: ack, Data: lockCommand(lc)})
	if err != nil {
		if _, ok := paxos.IsNotMaster(err); ok {
			return s.notMaster(g)
		}
		if errors.Is(err, replica.ErrStopped) {
			return fail(wire.CodeUnavailable, "node %d is stopping: try another node", s.cfg.ID)
		}
		return fail(wire.CodeOverloaded, "group %d was restored from a backup and must raise its fencing-token floor before anything else, which did not finish (%v): retry shortly", g, err)
	}
	if s.floorPending(g) {
		return fail(wire.CodeOverloaded, "group %d was restored from a backup and its fencing-token floor is not applied yet: retry shortly", g)
	}
	s.log.Info("fencing-token floor raised in a group restored from a backup", "group", g, "floor", lc.Token)
	return nil
}
