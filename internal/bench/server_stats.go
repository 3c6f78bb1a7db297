package bench

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
)

// proposeStats sums lockd_propose_seconds (the time from proposing a client
// command to its application, on the node that proposed it) over the
// running nodes of a local cluster: count and total seconds.
func proposeStats(o *Options) (count, sum float64) {
	if o.Cluster == nil {
		return 0, 0
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
				count += v
			case "lockd_propose_seconds_sum":
				sum += v
			}
		}
	}
	return count, sum
}

// measureServer runs fn and records the nodes' mean propose latency during
// it, so that a client's latency can be split into the cluster's part and
// the rest (client, QUIC, scheduling).
func measureServer(o *Options, r *Result, fn func()) {
	c0, s0 := proposeStats(o)
	fn()
	c1, s1 := proposeStats(o)
	if n := c1 - c0; n > 0 {
		r.Extra["server_propose_mean_ms"] = (s1 - s0) / n * 1e3
		r.Extra["server_proposals"] = n
	}
}
