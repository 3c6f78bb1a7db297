package server

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves the admin HTTP port: Prometheus /metrics,
// /debug/pprof, /healthz and /readyz (health.go), and a live status page at
// / with its JSON API under /api/ (statuspage.go).
func (s *Server) AdminHandler() http.Handler { return s.AdminHandlerWith(true) }

// AdminHandlerWith is AdminHandler, without /debug/pprof unless withPprof.
// The port has no authentication (README, Security).
func (s *Server) AdminHandlerWith(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.handleStatusPage(mux) // statuspage.go: /, /api/..., /healthz, /readyz
	return mux
}

// GroupInfo is one row of the status page.
type GroupInfo struct {
	Group    paxos.GroupID
	Master   paxos.NodeID
	Epoch    uint64
	Serving  bool
	Role     string
	Commit   uint64
	Applied  uint64
	InFlight int
	Sessions int
	Locks    int
	Waiters  int
	// Voters and Learners are the group's newest configuration as this
	// node knows it; ChangePending is set while it is not in force yet
	// (a membership change is under way).
	Voters        []paxos.NodeID
	Learners      []paxos.NodeID
	ChangePending bool
}

// Status is what the status page shows.
type Status struct {
	Node    paxos.NodeID
	Addr    string
	Uptime  time.Duration
	Members []Member
	Groups  []GroupInfo
}

// Member is one node as this node sees it.
type Member struct {
	ID   paxos.NodeID
	Addr string
	Up   bool
}

// Status collects the node's status: members, each group's master and slot
// progress, sessions and locks.
func (s *Server) Status(ctx context.Context) (Status, error) {
	now := time.Now()
	st := Status{Node: s.cfg.ID, Addr: s.addr(s.cfg.ID), Uptime: now.Sub(s.started).Round(time.Second)}
	for _, id := range s.nodeIDs() {
		st.Members = append(st.Members, Member{ID: id, Addr: s.addr(id), Up: id == s.cfg.ID || s.peerUp(id)})
	}
	masters := map[paxos.GroupID][2]uint64{}
	for _, gm := range s.elector.Snapshot(now) {
		masters[gm.Group] = [2]uint64{uint64(gm.Master), gm.Epoch}
	}
	for g := range s.groups {
		gid := paxos.GroupID(g)
		ps, err := s.replica.Status(ctx, gid)
		if err != nil {
			return st, err
		}
		ms, err := s.replica.Membership(ctx, gid)
		if err != nil {
			return st, err
		}
		gs := s.groups[g]
		gs.mu.Lock()
		stats := gs.table.Stats()
		gs.mu.Unlock()
		gi := GroupInfo{Group: gid, Master: paxos.NodeID(masters[gid][0]), Epoch: masters[gid][1],
			Serving: s.elector.Serving(gid, now), Role: ps.Role, Commit: ps.Commit, Applied: ps.Applied, InFlight: ps.InFlight,
			Sessions: stats.Sessions, Locks: stats.Locks, Waiters: stats.Waiters,
			ChangePending: groupMembers{ms: ms, st: ps}.pending()}
		for _, m := range ms.Latest() {
			if m.Voter {
				gi.Voters = append(gi.Voters, m.ID)
			} else {
				gi.Learners = append(gi.Learners, m.ID)
			}
		}
		st.Groups = append(st.Groups, gi)
	}
	return st, nil
}
