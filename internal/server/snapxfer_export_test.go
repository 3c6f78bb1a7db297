package server

import (
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// SetSnapshotHooks sets, on s, how long its transfers may go without a
// chunk (0: unchanged), and a function that sees every snapshot chunk s
// sends (nil: none), for tests of package server_test.
func SetSnapshotHooks(s *Server, stall time.Duration, sent func(to paxos.NodeID, offset, total uint64)) {
	x := s.snap
	x.mu.Lock()
	defer x.mu.Unlock()
	if stall > 0 {
		x.stall = stall
	}
	x.chunkHook = nil
	if sent != nil {
		x.chunkHook = func(to paxos.NodeID, f *snapFrame, _ []byte) bool {
			sent(to, f.offset, f.total)
			return true
		}
	}
}

// SnapshotTransfers returns s's receiving transfers: started, done and
// abandoned.
func SnapshotTransfers(s *Server) (started, done, abandoned int64) {
	st := &s.snap.stats
	return st.started.Load(), st.done.Load(), st.abandoned.Load()
}

// InjectPeerFrame hands frame to s as if peer from had sent it over the
// mesh (onPeerMessage), for tests of what s takes from which peer.
func InjectPeerFrame(s *Server, from paxos.NodeID, frame []byte) {
	s.onPeerMessage(quicnet.NodeID(from), frame)
}

// SnapshotBeginFrame is the first request of snapshot transfer xfer for
// group g, as a receiver sends it.
func SnapshotBeginFrame(xfer uint64, g paxos.GroupID) []byte {
	return appendSnapRequest(nil, &snapFrame{xfer: xfer, group: g, count: snapWindow, size: snapChunkSize})
}

// ServingTransfer reports whether s serves transfer xfer, and to whom.
func ServingTransfer(s *Server, xfer uint64) (paxos.NodeID, bool) {
	x := s.snap
	x.mu.Lock()
	defer x.mu.Unlock()
	out := x.serving[xfer]
	if out == nil {
		return 0, false
	}
	return out.to, true
}
