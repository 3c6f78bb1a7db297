package server

import (
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus metrics, in the server's own registry (no
// global state: several servers can run in one process, as `lockd dev` does).
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	inboxDrops   prometheus.Counter
	peerDrops    prometheus.Counter
	expired      prometheus.Counter
	slowClients  prometheus.Counter
	proposeNanos prometheus.Histogram
	syncedWrites prometheus.Counter
	syncSeconds  prometheus.Histogram
	diskFull     prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockd_requests_total", Help: "Client requests by type and outcome code.",
		}, []string{"type", "code"}),
		inboxDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockd_peer_inbox_drops_total", Help: "Peer messages dropped because the Paxos inbox was full.",
		}),
		peerDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockd_peer_send_drops_total", Help: "Peer messages dropped because a peer's send queue was full.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockd_sessions_expired_total", Help: "Sessions this node expired as group master.",
		}),
		slowClients: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockd_slow_clients_closed_total", Help: "Client connections closed because they did not read their events.",
		}),
		proposeNanos: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lockd_propose_seconds", Help: "Time from proposing a client command to its application.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		syncedWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockd_store_synced_writes_total", Help: "Synced (fsync) writes of the node's Paxos state; each carries every group's changes waiting at the time.",
		}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lockd_store_sync_seconds", Help: "Time of one synced write of the node's Paxos state.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}),
	}
	m.diskFull = prometheus.NewGauge(prometheus.GaugeOpts{Name: "lockd_disk_full",
		Help: "1 while the data dir's disk is below its free-space reserve and the node writes nothing (it does not vote), else 0."})
	m.reg.MustRegister(m.diskFull)
	m.reg.MustRegister(m.requests, m.inboxDrops, m.peerDrops, m.expired, m.slowClients, m.proposeNanos, m.syncedWrites, m.syncSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// meteredStore counts the synced writes of the node's store and times them:
// synced writes per proposal is the figure that batching across clients and
// groups is there to cut, and on a shared disk it bounds throughput.
type meteredStore struct {
	*pebblestore.Store
	m *metrics
}

func (s *meteredStore) Save(w []paxos.GroupWrite) error {
	t := time.Now()
	err := s.Store.Save(w)
	s.m.syncSeconds.Observe(time.Since(t).Seconds())
	s.m.syncedWrites.Inc()
	s.m.noteDisk(err)
	return err
}
