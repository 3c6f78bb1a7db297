package server

import (
	"context"
	"io"
	"log/slog"

	"github.com/lockd/lockd/paxos"
)

// ProposeStats reads the propose-time histogram, for benchmarks.

func (m *metrics) ProposeStats() (float64, uint64) {
	mfs, _ := m.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "lockd_propose_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum(), h.GetSampleCount()
		}
	}
	return 0, 0
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// MembershipForTest returns group g's membership as this node knows it.
func (s *Server) MembershipForTest(ctx context.Context, g paxos.GroupID) (paxos.Membership, error) {
	return s.replica.Membership(ctx, g)
}

// FoundingForTest returns the founding configuration of the member file.
func (s *Server) FoundingForTest() []paxos.NodeID {
	s.mfMu.Lock()
	defer s.mfMu.Unlock()
	return s.mf.initialNodes()
}
