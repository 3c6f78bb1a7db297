package localcluster

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
)

// ServerSums are metrics summed over the running nodes of a cluster.
type ServerSums struct {
	// Proposals and ProposeSeconds are lockd_propose_seconds: the time
	// from proposing a client command to its application, on the node
	// that proposed it.
	Proposals, ProposeSeconds float64
	// Syncs and SyncSeconds are lockd_store_sync_seconds: the synced
	// writes of the nodes' Paxos state, and their time.
	Syncs, SyncSeconds float64
	// SyncBuckets is lockd_store_sync_seconds' cumulative histogram:
	// synced writes that took at most each bound (seconds), summed over
	// the nodes.
	SyncBuckets map[float64]float64
	// Yields is lockd_store_yields_total: synced writes the nodes held
	// back to leave the disk to a light identity (server.Config.YieldGap).
	Yields float64
}

// Sums reads the metrics of every running node, through its admin handler
// (no listener needed). Benchmarks take it before and after a phase: the
// difference splits a client's latency into the cluster's part and the
// rest, and counts the fsyncs the phase cost.
func (c *Cluster) Sums() (t ServerSums) {
	for i := range c.N() {
		s := c.Server(i)
		if s == nil {
			continue
		}
		rec := httptest.NewRecorder()
		s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		sc := bufio.NewScanner(rec.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			name, val, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				continue
			}
			if le, ok := strings.CutPrefix(name, `lockd_store_sync_seconds_bucket{le="`); ok {
				if b, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64); err == nil {
					if t.SyncBuckets == nil {
						t.SyncBuckets = map[float64]float64{}
					}
					t.SyncBuckets[b] += v
				}
				continue
			}
			switch name {
			case "lockd_propose_seconds_count":
				t.Proposals += v
			case "lockd_propose_seconds_sum":
				t.ProposeSeconds += v
			case "lockd_store_sync_seconds_count":
				t.Syncs += v
			case "lockd_store_sync_seconds_sum":
				t.SyncSeconds += v
			case "lockd_store_yields_total":
				t.Yields += v
			}
		}
	}
	return t
}
