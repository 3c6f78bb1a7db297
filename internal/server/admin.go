package server

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves the admin HTTP port: Prometheus /metrics,
// /debug/pprof, and a status page at /.
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
	mux.HandleFunc("/", s.statusPage)
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
	st := Status{Node: s.cfg.ID, Addr: s.cfg.Peers[s.cfg.ID], Uptime: now.Sub(s.started).Round(time.Second)}
	for _, id := range s.nodeIDs() {
		st.Members = append(st.Members, Member{ID: id, Addr: s.cfg.Peers[id], Up: id == s.cfg.ID || s.peerUp(id)})
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
		gs := s.groups[g]
		gs.mu.Lock()
		stats := gs.table.Stats()
		gs.mu.Unlock()
		st.Groups = append(st.Groups, GroupInfo{Group: gid, Master: paxos.NodeID(masters[gid][0]), Epoch: masters[gid][1],
			Serving: s.elector.Serving(gid, now), Role: ps.Role, Commit: ps.Commit, Applied: ps.Applied, InFlight: ps.InFlight,
			Sessions: stats.Sessions, Locks: stats.Locks, Waiters: stats.Waiters})
	}
	return st, nil
}

var statusTmpl = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><title>lockd node {{.Node}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}th{background:#f4f4f4}.up{color:#080}.down{color:#b00}</style>
</head><body>
<h1>lockd node {{.Node}}</h1>
<p>{{.Addr}} &middot; up {{.Uptime}} &middot; <a href="/metrics">metrics</a> &middot; <a href="/debug/pprof/">pprof</a></p>
<h2>Members</h2>
<table><tr><th>node</th><th>address</th><th>reachable</th></tr>
{{range .Members}}<tr><td>{{.ID}}</td><td>{{.Addr}}</td><td class="{{if .Up}}up{{else}}down{{end}}">{{if .Up}}yes{{else}}no{{end}}</td></tr>
{{end}}</table>
<h2>Groups</h2>
<table><tr><th>group</th><th>master</th><th>epoch</th><th>serving here</th><th>paxos role</th><th>commit</th><th>applied</th><th>in flight</th><th>sessions</th><th>locks</th><th>waiters</th></tr>
{{range .Groups}}<tr><td>{{.Group}}</td><td>{{if .Master}}{{.Master}}{{else}}none{{end}}</td><td>{{.Epoch}}</td><td>{{if .Serving}}yes{{end}}</td><td>{{.Role}}</td><td>{{.Commit}}</td><td>{{.Applied}}</td><td>{{.InFlight}}</td><td>{{.Sessions}}</td><td>{{.Locks}}</td><td>{{.Waiters}}</td></tr>
{{end}}</table>
</body></html>
`))

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st, err := s.Status(ctx)
	if err != nil {
		http.Error(w, fmt.Sprintf("status of node %d: %v", s.cfg.ID, err), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusTmpl.Execute(w, st); err != nil {
		s.log.Warn("status page", "err", err)
	}
}
