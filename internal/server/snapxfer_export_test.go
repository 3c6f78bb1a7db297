package server

import (
	"time"

	"github.com/lockd/lockd/paxos"
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
