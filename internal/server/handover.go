package server

import (
	"context"
	"time"
)

// handOver runs when the node is asked to stop (Run's context ends), before
// anything stops: it has the election release every group this node holds
// to another node that is up (election.Elector.Retire), waits until the
// releases are applied, and then, for up to half a lease, until the new
// masters' leases are (the others learn that a release was chosen from the
// next message of this node, the Paxos master still; without it they would
// wait a lease for a new master to find it). So the groups are served again
// within a few round trips instead of a lease later. It gives up after two
// leases, or at once when no other node is up to take over.
func (s *Server) handOver(ctx context.Context) {
	start := time.Now()
	held := s.elector.Retire()
	if held == 0 {
		return
	}
	lease := s.elector.Config().Lease
	wait := func(until time.Time, busy func() int) bool {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for busy() > 0 && s.elector.PeersUp() && time.Now().Before(until) {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return false
			}
		}
		return busy() == 0
	}
	if !wait(start.Add(2*lease), s.elector.Holding) {
		s.log.Warn("stopping without handing every group over", "groups", held, "still held", s.elector.Holding(), "took", time.Since(start))
		return
	}
	released := time.Since(start)
	taken := wait(time.Now().Add(lease/2), s.elector.Handing)
	s.log.Info("handed every group over before stopping", "groups", held, "released_after", released,
		"new_masters_seen", taken, "took", time.Since(start))
}
