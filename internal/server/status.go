package server

import (
	"context"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/paxos"
)

// clusterStatus answers Hello and ClusterStatus: the members with their
// addresses and whether this node reaches them, and each group's master.
func (s *Server) clusterStatus() *wire.Msg {
	resp := &wire.Msg{Code: wire.CodeOK, Groups: uint32(s.cfg.Groups), Rules: s.RulesHash()}
	for _, id := range s.nodeIDs() {
		up := id == s.cfg.ID || s.peerUp(id)
		resp.Members = append(resp.Members, wire.MemberItem{ID: uint32(id), Addr: s.addr(id), Up: up})
	}
	for _, gm := range s.elector.Snapshot(s.now()) {
		resp.Masters = append(resp.Masters, wire.MasterItem{Group: uint32(gm.Group), Epoch: gm.Epoch, Seq: gm.Seq, Master: uint32(gm.Master), Addr: s.addr(gm.Master)})
	}
	return resp
}

// watchMasters streams master changes after the last event the client
// names per group (req.Masters: epoch and master; none: from the current
// state on). It answers at once with the current masters, for routing only:
// the stream itself first pushes what the client missed of each group it
// names (election.Elector.Resume), and the current state of the others,
// then every change, in order per group. When this node no longer keeps
// what the client missed, the answer is CodeResync with the current state.
func (s *Server) watchMasters(ctx context.Context, cs *clientStream, req *wire.Msg) *wire.Msg {
	last := map[paxos.GroupID]election.Event{}
	for _, m := range req.Masters {
		last[paxos.GroupID(m.Group)] = election.Event{Group: paxos.GroupID(m.Group), Epoch: m.Epoch, Seq: m.Seq, Master: paxos.NodeID(m.Master)}
	}
	events, cancel, err := s.elector.Resume(last)
	if err != nil {
		resp := s.clusterStatus()
		resp.Code = wire.CodeResync
		resp.Err = err.Error()
		return resp
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		defer cs.dropMasterWatch() // counted by handle (per-identity cap)
		for {
			select {
			case ev, ok := <-events:
				if !ok || ev.Err != nil {
					cs.push(&wire.Msg{Type: wire.TypeEvent, ReqID: req.ReqID, Kind: wire.EventMaster, Code: wire.CodeResync,
						Err: "the master-change stream fell behind; subscribe again"})
					return
				}
				cs.push(&wire.Msg{Type: wire.TypeEvent, ReqID: req.ReqID, Kind: wire.EventMaster, Epoch: ev.Epoch,
					Masters: []wire.MasterItem{{Group: uint32(ev.Group), Epoch: ev.Epoch, Seq: ev.Seq, Cause: uint8(ev.Cause), Master: uint32(ev.Master), Addr: s.addr(ev.Master)}}})
			case <-cs.done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	resp := s.clusterStatus()
	return resp
}
