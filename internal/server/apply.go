package server

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
)

// Command kinds: the first byte of every paxos.Command's Data says which
// state machine it is for.
const (
	tagLock     = 'L' // a lease.Command for the group's lock table
	tagElection = 'E' // an election.LeaseCmd
)

// groupState is one group's lock table. mu guards the table: the replica's
// goroutine applies to it, handlers read it, the expiry loop scans it.
type groupState struct {
	mu    sync.Mutex
	table *lease.Table
	// floorPending: the group was restored from a backup and has not
	// applied an OpRaiseTokenFloor since; no other lock command is
	// proposed until it has (restore.go). Replicated state: it is in the
	// group's snapshot and changes only by applying the log.
	floorPending bool
	// fair admits clients' proposals to the group fairly between
	// identities (fairq.go); it has its own lock.
	fair *fairQueue
}

// Apply implements replica.StateMachine. It runs on the replica's goroutine,
// in slot order per group, and must not block: pushes to clients go through
// bounded queues that drop slow clients.
func (s *Server) Apply(g paxos.GroupID, slot uint64, index int, cmd *paxos.Command) []byte {
	if len(cmd.Data) == 0 {
		return nil // a no-op
	}
	switch cmd.Data[0] {
	case tagElection:
		lc, err := election.DecodeLeaseCmd(cmd.Data[1:])
		if err != nil {
			s.log.Error("undecodable election command in the log", "group", g, "slot", slot, "err", err)
			return nil
		}
		if err := s.elector.Applied(g, slot, lc, s.now()); err != nil {
			s.log.Error("election command refused", "group", g, "slot", slot, "err", err)
		}
		return nil
	case tagLock:
		lc, err := lease.DecodeCommand(cmd.Data[1:])
		if err != nil {
			s.log.Error("undecodable lock command in the log", "group", g, "slot", slot, "err", err)
			return encodeResult(lease.Result{Code: lease.CodeInvalid})
		}
		gs := s.groups[g]
		gs.mu.Lock()
		var expiring lease.SessionInfo
		if lc.Op == lease.OpExpireSession {
			expiring, _ = gs.table.Session(lc.Session)
		}
		res := gs.table.Apply(lease.Position{Slot: slot, Index: uint32(index)}, lc)
		if lc.Op == lease.OpRaiseTokenFloor && res.Code == lease.CodeOK {
			gs.floorPending = false
		}
		s.obs.applied(g, lc, expiring, res) // logs and metrics (observe.go)
		var opened lease.SessionInfo
		ended := false
		switch lc.Op {
		case lease.OpOpenSession:
			opened, _ = gs.table.Session(res.Session)
		case lease.OpCloseSession, lease.OpExpireSession:
			_, still := gs.table.Session(lc.Session)
			ended = !still
		}
		var states map[string]eventState
		if len(res.Events) > 0 {
			states = s.hub.watchedStates(res.Events, gs.table)
		}
		gs.mu.Unlock()
		s.trackSessions(g, lc, opened, ended)
		if len(res.Events) > 0 {
			s.hub.publish(g, slot, res.Events, states)
		}
		return encodeResult(res)
	}
	s.log.Error("unknown command kind in the log", "group", g, "slot", slot, "kind", cmd.Data[0])
	return nil
}

// encodeResult packs what a handler needs of a lease.Result: code, session
// and token. Events go to the hub, not to the caller.
func encodeResult(r lease.Result) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+64)
	b = append(b, byte(r.Code))
	b = binary.AppendUvarint(b, r.Session)
	b = binary.AppendUvarint(b, r.Token)
	if e := r.Err(); e != nil && r.Code != lease.CodeOK && r.Code != lease.CodeQueued {
		b = append(b, e.Error()...)
	}
	return b
}

type appliedResult struct {
	code    wire.Code
	session uint64
	token   uint64
	err     string
}

func decodeResult(b []byte) (appliedResult, error) {
	if len(b) < 1 {
		return appliedResult{}, fmt.Errorf("empty result")
	}
	r := appliedResult{code: wire.Code(b[0])}
	b = b[1:]
	var n int
	r.session, n = binary.Uvarint(b)
	if n <= 0 {
		return r, fmt.Errorf("bad session in result")
	}
	b = b[n:]
	r.token, n = binary.Uvarint(b)
	if n <= 0 {
		return r, fmt.Errorf("bad token in result")
	}
	r.err = string(b[n:])
	return r, nil
}

func lockCommand(c lease.Command) []byte {
	return c.AppendTo([]byte{tagLock})
}

// trackSessions keeps the session clock's membership in step with the
// table: a session is added when its open is applied and forgotten once it
// is gone (closed or expired), on every node, so that a new master knows
// every session without scanning its table.
func (s *Server) trackSessions(g paxos.GroupID, lc lease.Command, opened lease.SessionInfo, ended bool) {
	switch {
	case opened.ID != 0:
		s.sessions.seen(g, opened.ID, opened.TTL, s.now()) // opening is a sign of life
	case ended:
		s.sessions.ended(g, lc.Session)
	}
}
