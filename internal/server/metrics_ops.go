package server

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMetricsPrefixDepth is Config.MetricsPrefixDepth's default: the
// per-lock metrics are labelled with the first segment of the lock name
// ("orders/42" counts under "orders/").
const DefaultMetricsPrefixDepth = 1

// maxPrefixes bounds the distinct prefix label values of the per-lock
// metrics; names beyond it count under "other".
const maxPrefixes = 200

// noPrefix labels the locks whose name has no "/" within the depth.
const noPrefix = "(none)"

// opsMetrics are what an operator watches: masters per group, the lock
// tables, the peer mesh, the clients. They live in the server's registry
// beside the older metrics of metrics.go.
type opsMetrics struct {
	hasMaster     *prometheus.GaugeVec
	isMaster      *prometheus.GaugeVec
	master        *prometheus.GaugeVec
	epoch         *prometheus.GaugeVec
	masterChanges *prometheus.CounterVec
	proposeGroup  *prometheus.HistogramVec

	grants       *prometheus.CounterVec
	lockExpiries *prometheus.CounterVec
	handover     *prometheus.HistogramVec
	hold         *prometheus.HistogramVec
	wait         *prometheus.HistogramVec
	sessionsEnd  *prometheus.CounterVec

	peerUp      *prometheus.GaugeVec
	peerRTT     *prometheus.GaugeVec
	peerChanges *prometheus.CounterVec
	clientConns prometheus.Gauge
	bytes       *prometheus.CounterVec
	// the four series of bytes
	peerIn, peerOut, clientIn, clientOut prometheus.Counter
	storeErrors                          prometheus.Counter

	// prefixes caps the prefix label values (maxPrefixes).
	pmu      sync.Mutex
	prefixes map[string]struct{}
}

// Buckets of the per-lock histograms: 1ms to about 9h.
var lockBuckets = prometheus.ExponentialBuckets(0.001, 4, 13)

func newOpsMetrics() *opsMetrics {
	g := []string{"group"}
	p := []string{"prefix"}
	return &opsMetrics{
		hasMaster: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lockd_group_has_master",
			Help: "1 when this node knows a master of the group whose lease runs, 0 when the group has none."}, g),
		isMaster: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lockd_group_is_master",
			Help: "1 when this node is the group's master."}, g),
		master: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lockd_group_master",
			Help: "The node id of the group's master as this node sees it, 0 for none."}, g),
		epoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lockd_group_master_epoch",
			Help: "The epoch of the group's last master change as this node saw it."}, g),
		masterChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockd_group_master_changes_total",
			Help: "Master changes of the group seen by this node (a new master, or none after an expiry or a hand-over)."}, g),
		proposeGroup: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lockd_group_propose_seconds",
			Help: "Time from proposing a client command to its application, per group.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}, g),

		grants: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockd_lock_grants_total",
			Help: "Locks granted while this node was the group's master, by lock-name prefix."}, p),
		lockExpiries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockd_lock_expiries_total",
			Help: "Grants that ended because their session expired, while this node was the group's master, by lock-name prefix."}, p),
		handover: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lockd_lock_handover_seconds",
			Help: "Time from the end of a grant (release or expiry) to the grant to the next waiter, by lock-name prefix (table time).", Buckets: lockBuckets}, p),
		hold: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lockd_lock_hold_seconds",
			Help: "How long grants were held, from grant to release or expiry, by lock-name prefix (table time).", Buckets: lockBuckets}, p),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lockd_lock_wait_seconds",
			Help: "How long granted requests waited in the queue, by lock-name prefix (table time).", Buckets: lockBuckets}, p),
		sessionsEnd: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockd_session_ends_total",
			Help: "Sessions ended while this node was the group's master, by how (closed, expired)."}, []string{"how"}),

		peerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lockd_peer_up",
			Help: "1 when the peer answers probes over a live connection, 0 when it does not."}, []string{"peer"}),
		peerRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lockd_peer_rtt_seconds",
			Help: "Round-trip time of the last probe answered by the peer (through the peer lanes, queueing included)."}, []string{"peer"}),
		peerChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockd_peer_state_changes_total",
			Help: "Times the peer joined (state=up) or left (state=down) the mesh as this node sees it."}, []string{"peer", "state"}),
		clientConns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lockd_client_connections",
			Help: "Client connections open now."}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockd_network_bytes_total",
			Help: "Message bytes received (in) and sent (out), on the peer mesh and client streams (frame payloads, before QUIC)."}, []string{"link", "direction"}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "lockd_store_write_errors_total",
			Help: "Synced writes of the node's store that failed."}),
		prefixes: map[string]struct{}{},
	}
}

func (m *opsMetrics) init() *opsMetrics {
	m.peerIn = m.bytes.WithLabelValues("peer", "in")
	m.peerOut = m.bytes.WithLabelValues("peer", "out")
	m.clientIn = m.bytes.WithLabelValues("client", "in")
	m.clientOut = m.bytes.WithLabelValues("client", "out")
	return m
}

func (m *opsMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.hasMaster, m.isMaster, m.master, m.epoch, m.masterChanges, m.proposeGroup,
		m.grants, m.lockExpiries, m.handover, m.hold, m.wait, m.sessionsEnd,
		m.peerUp, m.peerRTT, m.peerChanges, m.clientConns, m.bytes, m.storeErrors}
}

// prefix returns the label of a lock name: its first depth segments that
// end with "/", at most maxPrefixes distinct values, the rest "other".
// depth 0 or less puts every lock under one label.
func (m *opsMetrics) prefix(name string, depth int) string {
	p := lockPrefix(name, depth)
	m.pmu.Lock()
	defer m.pmu.Unlock()
	if _, ok := m.prefixes[p]; ok {
		return p
	}
	if len(m.prefixes) >= maxPrefixes {
		return "other"
	}
	m.prefixes[p] = struct{}{}
	return p
}

// lockPrefix is name cut after its depth-th "/" (or after its last "/" when
// it has fewer), noPrefix when it has none or depth is 0 or less.
func lockPrefix(name string, depth int) string {
	end := 0
	for range max(depth, 0) {
		i := strings.IndexByte(name[end:], '/')
		if i < 0 {
			break
		}
		end += i + 1
	}
	if end == 0 {
		return noPrefix
	}
	return name[:end]
}

// observePropose records one client command's trip through Paxos.
func (s *Server) observePropose(g paxos.GroupID, d time.Duration) {
	s.metrics.proposeNanos.Observe(d.Seconds())
	if s.ops == nil {
		return
	}
	s.ops.proposeGroup.WithLabelValues(groupLabel(g)).Observe(d.Seconds())
}

func groupLabel(g paxos.GroupID) string { return strconv.FormatUint(uint64(g), 10) }

// tableCollector reports, at scrape time, what each group's lock table and
// Paxos state hold, and how long each group has been without a master.
type tableCollector struct {
	s                                    *Server
	sessions, locks, held, waiters       *prometheus.Desc
	commit, applied, inFlight            *prometheus.Desc
	masterless, masterlessTotal, started *prometheus.Desc
}

func newTableCollector(s *Server) *tableCollector {
	g := []string{"group"}
	return &tableCollector{s: s,
		sessions:        prometheus.NewDesc("lockd_group_sessions", "Open sessions in the group's lock table.", g, nil),
		locks:           prometheus.NewDesc("lockd_group_locks", "Lock names with state (held, awaited or in lock-delay) in the group.", g, nil),
		held:            prometheus.NewDesc("lockd_group_locks_held", "Grants in force in the group (a shared lock counts each holder).", g, nil),
		waiters:         prometheus.NewDesc("lockd_group_waiters", "Requests queued for locks of the group.", g, nil),
		commit:          prometheus.NewDesc("lockd_group_commit_index", "The group's commit index on this node.", g, nil),
		applied:         prometheus.NewDesc("lockd_group_applied_index", "The group's last applied slot on this node.", g, nil),
		inFlight:        prometheus.NewDesc("lockd_group_slots_in_flight", "Slots this node proposed as the group's Paxos master that are not known chosen yet.", g, nil),
		masterless:      prometheus.NewDesc("lockd_group_masterless_seconds", "How long the group has been without a master now, 0 while it has one.", g, nil),
		masterlessTotal: prometheus.NewDesc("lockd_group_masterless_seconds_total", "Time the group spent without a master since this node started.", g, nil),
		started:         prometheus.NewDesc("lockd_node_start_time_seconds", "When this node started, in unix seconds.", nil, nil),
	}
}

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.locks, c.held, c.waiters, c.commit, c.applied, c.inFlight, c.masterless, c.masterlessTotal, c.started} {
		ch <- d
	}
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ch <- prometheus.MustNewConstMetric(c.started, prometheus.GaugeValue, float64(s.started.UnixNano())/1e9)
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i, gs := range s.groups {
		g := paxos.GroupID(i)
		l := groupLabel(g)
		gs.mu.Lock()
		st := gs.table.Stats()
		gs.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(st.Sessions), l)
		ch <- prometheus.MustNewConstMetric(c.locks, prometheus.GaugeValue, float64(st.Locks), l)
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(st.Holders), l)
		ch <- prometheus.MustNewConstMetric(c.waiters, prometheus.GaugeValue, float64(st.Waiters), l)
		if s.obs != nil {
			cur, total := s.obs.masterless(g, now)
			ch <- prometheus.MustNewConstMetric(c.masterless, prometheus.GaugeValue, cur.Seconds(), l)
			ch <- prometheus.MustNewConstMetric(c.masterlessTotal, prometheus.CounterValue, total.Seconds(), l)
		}
		if r := s.ready.Load(); r != nil && ctx.Err() == nil {
			if ps, err := r.Status(ctx, g); err == nil {
				ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, float64(ps.Commit), l)
				ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(ps.Applied), l)
				ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(ps.InFlight), l)
			}
		}
	}
}

// initOps makes the operator metrics and the observer; New calls it once
// the elector exists.
func (s *Server) initOps() {
	s.ops = newOpsMetrics().init()
	s.metrics.reg.MustRegister(s.ops.collectors()...)
	s.metrics.reg.MustRegister(newTableCollector(s))
	s.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "lockd_store_yields_total",
		Help: "Synced writes this node held back (up to the yield gap) to leave the disk to a light identity competing with heavy ones.",
	}, func() float64 {
		if r := s.ready.Load(); r != nil {
			return float64(r.Yields())
		}
		return 0
	}))
	depth := s.cfg.MetricsPrefixDepth
	if depth == 0 {
		depth = DefaultMetricsPrefixDepth
	}
	s.obs = newObserver(s, depth)
}

// sendPeerFrame is the mesh's Send, counting the bytes.
func (s *Server) sendPeerFrame(to quicnet.NodeID, lane int, b []byte) error {
	err := s.qnode.Send(to, lane, b)
	if err == nil && s.ops != nil {
		s.ops.peerOut.Add(float64(len(b)))
	}
	return err
}
