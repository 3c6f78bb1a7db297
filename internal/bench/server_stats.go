package bench

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
)

// serverSums are metrics summed over the running nodes of a local cluster.
type serverSums struct {
	// proposals and proposeSeconds are lockd_propose_seconds: the time from
	// proposing a client command to its application, on the node that
	// proposed it.
	proposals, proposeSeconds float64
	// syncs and syncSeconds are lockd_store_sync_seconds: the synced writes.
	syncs, syncSeconds float64
}

// sumServers reads the metrics of every running node of a local cluster.
func sumServers(o *Options) (t serverSums) {
	if o.Cluster == nil {
		return t
	}
	for i := range o.Cluster.N() {
		s := o.Cluster.Server(i)
		if s == nil {
			continue
		}
		rec := httptest.NewRecorder()
		s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		sc := bufio.NewScanner(rec.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			name, val, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				continue
			}
			switch name {
			case "lockd_propose_seconds_count":
				t.proposals += v
			case "lockd_propose_seconds_sum":
				t.proposeSeconds += v
			case "lockd_store_sync_seconds_count":
				t.syncs += v
			case "lockd_store_sync_seconds_sum":
				t.syncSeconds += v
			}
		}
	}
	return t
}

// measureServer runs fn and records the nodes' mean propose latency during
// it, so that a client's latency can be split into the cluster's part and
// the rest (client, QUIC, scheduling), and the synced writes per proposal
// (all nodes), which bound throughput on a shared disk.
func measureServer(o *Options, r *Result, fn func()) {
	a := sumServers(o)
	fn()
	b := sumServers(o)
	if n := b.proposals - a.proposals; n > 0 {
		r.Extra["server_propose_mean_ms"] = (b.proposeSeconds - a.proposeSeconds) / n * 1e3
		r.Extra["server_proposals"] = n
		r.Extra["server_syncs_per_proposal"] = (b.syncs - a.syncs) / n
	}
	if n := b.syncs - a.syncs; n > 0 {
		r.Extra["server_sync_mean_us"] = (b.syncSeconds - a.syncSeconds) / n * 1e6
	}
}
