package bench

import "github.com/lockd/lockd/internal/localcluster"

// sumServers reads the metrics of every running node of a local cluster.
func sumServers(o *Options) localcluster.ServerSums {
	if o.Cluster == nil {
		return localcluster.ServerSums{}
	}
	return o.Cluster.Sums()
}

// measureServer runs fn and records the nodes' mean propose latency during
// it, so that a client's latency can be split into the cluster's part and
// the rest (client, QUIC, scheduling), and the synced writes per proposal
// (all nodes), which bound throughput on a shared disk.
func measureServer(o *Options, r *Result, fn func()) {
	a := sumServers(o)
	fn()
	b := sumServers(o)
	if n := b.Proposals - a.Proposals; n > 0 {
		r.Extra["server_propose_mean_ms"] = (b.ProposeSeconds - a.ProposeSeconds) / n * 1e3
		r.Extra["server_proposals"] = n
		r.Extra["server_syncs_per_proposal"] = (b.Syncs - a.Syncs) / n
	}
	if n := b.Syncs - a.Syncs; n > 0 {
		r.Extra["server_sync_mean_us"] = (b.SyncSeconds - a.SyncSeconds) / n * 1e6
	}
}
