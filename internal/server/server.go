// Package server is one lockd node: the Paxos replica of its groups on a
// pebble store, the QUIC endpoint shared by peers and clients, the master
// election, the lock tables, and the client protocol on top of them.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/internal/ratelog"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
	"github.com/lockd/lockd/paxos/replica"
	"github.com/lockd/lockd/quicnet"
)

// Config is one node's configuration. Validate names the first bad field.
type Config struct {
	// ID is this node; Peers maps every node of the cluster (this one
	// included) to its UDP address.
	ID    paxos.NodeID
	Peers map[paxos.NodeID]string
	// Listen is the local UDP address (default: this node's Peers entry).
	Listen string
	// Groups is the number of Paxos groups; it is fixed when the cluster is
	// created and a node started with another count refuses to start.
	Groups int
	// DataDir holds the node's pebble database.
	DataDir string
	// ClusterID names the cluster in the data dir's meta record.
	ClusterID string
	// TLS is the node's mutual-TLS configuration (cluster CA, node cert).
	TLS *tls.Config
	// PacketConn, when set, is used instead of opening a UDP socket (tests
	// inject a quicnet.FaultConn here).
	PacketConn net.PacketConn
	// Tick is the Paxos tick (default 10ms); Window the slots in flight per
	// group (default 64).
	Tick   time.Duration
	Window int
	// Lease is the master lease (default 2s).
	Lease time.Duration
	// ProposeTimeout bounds one client command's trip through Paxos
	// (default 5s); past it the client hears "outcome unknown".
	ProposeTimeout time.Duration
	// TestClockRate, for fault-injection tests only, makes the clock that
	// this node's leases, election, session expiry and lock deadlines read
	// run at this rate (1.5: half again as fast as real time); 0 or 1 is
	// the real clock. See internal/nemesis.
	TestClockRate float64
	// ExpiryInterval is how often a master looks for expired sessions
	// (default 100ms).
	ExpiryInterval time.Duration
	// GroupCommitWait is how long a synced write may wait for the other
	// busy groups' writes so that one fsync covers them
	// (replica.Config.GroupCommitWait; default DefaultGroupCommitWait,
	// negative turns it off).
	GroupCommitWait time.Duration
	// YieldGap is how far apart a node spaces its synced writes that are
	// not urgent for a second after a light identity's command met other
	// identities' commands in flight on its master, so that the disk is
	// free for the light one's writes (replica.Config.YieldGap; default
	// replica.DefaultYieldGap, negative turns it off).
	YieldGap time.Duration
	// Logger receives the node's logs (default slog.Default()).
	Logger *slog.Logger
	// RecoverFromPeers re-creates a node that lost its state, on an empty
	// data dir: it waits for every peer, and does not vote until it has
	// caught up (incarnation.go).
	RecoverFromPeers bool
	// Join starts a brand-new node of an existing cluster (lockd run
	// --join), on an empty data dir: Peers lists this node and members to
	// reach, nothing more: the groups' founding configuration comes from a
	// member (incarnation.go). It is no member of any group until an
	// operator adds it (lockctl members add): meanwhile NewContext waits
	// and says so, and once added it catches up as a learner and does not
	// vote or campaign until it is promoted (members.go).
	Join bool
	// ACLFile is the access rules file (lockd run --acl; JSON, see
	// RulesFile); empty: every client identity may lock and read every
	// name, and nobody is admin. ReloadRules reads it again.
	ACLFile string
	// IdentityLimits are the per-identity caps unless the rules file sets
	// them (default DefaultIdentityLimits).
	IdentityLimits *IdentityLimits
	// MetricsPrefixDepth is how many "/"-separated segments of a lock name
	// label the per-lock metrics (default DefaultMetricsPrefixDepth;
	// negative: one label for every lock). At most 200 distinct prefixes are
	// kept, the rest count as "other".
	MetricsPrefixDepth int
	// SnapshotEvery is how many applied slots of a group lead to a new
	// snapshot of it, after which its log is compacted (lockd run
	// --snapshot-every; 0: replica.DefaultSnapshotEvery, negative: never).
	// SnapshotMargin is how many slots below a snapshot the log keeps for
	// peers slightly behind (0: replica.DefaultSnapshotMargin).
	SnapshotEvery  int
	SnapshotMargin uint64
}

// Validate fills defaults and reports the first bad field.
func (c *Config) Validate() error {
	if err := validTestClockRate(c.TestClockRate); err != nil {
		return err
	}
	if c.ID == 0 {
		return errors.New("node config: the node id must be set (1 or more)")
	}
	if len(c.Peers) == 0 {
		return errors.New("node config: peers must list every node of the cluster with its address")
	}
	if _, ok := c.Peers[c.ID]; !ok {
		return fmt.Errorf("node config: peers do not include this node (%d)", c.ID)
	}
	if c.Listen == "" {
		c.Listen = c.Peers[c.ID]
	}
	if c.Groups <= 0 || c.Groups > 4096 {
		return fmt.Errorf("node config: groups is %d, want 1 to 4096", c.Groups)
	}
	if c.DataDir == "" {
		return errors.New("node config: a data dir is required")
	}
	if c.TLS == nil {
		return errors.New("node config: TLS is required: make certificates with `lockd certs init` and `lockd certs node ID`")
	}
	if c.ClusterID == "" {
		c.ClusterID = "lockd"
	}
	if c.Tick == 0 {
		c.Tick = 10 * time.Millisecond
	}
	if c.Window == 0 {
		c.Window = 64
	}
	if c.Lease == 0 {
		c.Lease = 2 * time.Second
	}
	if c.ProposeTimeout == 0 {
		c.ProposeTimeout = 5 * time.Second
	}
	if c.ExpiryInterval == 0 {
		c.ExpiryInterval = 100 * time.Millisecond
	}
	if c.GroupCommitWait == 0 {
		c.GroupCommitWait = DefaultGroupCommitWait
	}
	if c.YieldGap == 0 {
		c.YieldGap = replica.DefaultYieldGap
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// DefaultGroupCommitWait is Config.GroupCommitWait's default. The wait
// applies only while other groups are busy, so one group never pays it; see
// docs/benchmarks.md for the measurements behind the value.
const DefaultGroupCommitWait = 400 * time.Microsecond

// Server is one running lockd node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *pebblestore.Store
	qnode *quicnet.Node
	// meshUp is set once qnode is: peers' frames can arrive while
	// quicnet.New is still returning it, and their handlers answer
	// through qnode (a probe's pong, a hello's reply). onPeerMessage drops
	// frames until then, as a lossy network may; a race detector run saw
	// a probe read qnode while New assigned it.
	meshUp atomic.Bool
	// proposing counts the client commands in flight on this node, of
	// every identity (Server.propose, proposeKind).
	proposing atomic.Int64
	replica   *replica.Replica
	snap      *snapXfer // snapshot transfers with peers (snapxfer.go)
	// ready is the replica once New has made it: peers may send before.
	ready   atomic.Pointer[replica.Replica]
	elector *election.Elector
	groups  []*groupState
	hub     *hub
	metrics *metrics
	ops     *opsMetrics // metrics_ops.go
	obs     *observer   // observe.go: logs and metrics of master changes, peers, expiries

	sessions *sessionClock
	// Commands this node proposes itself (expiry, ticks, leases) use their
	// own command ids: lock-table commands under ownIDs, lease commands
	// under electionClient.
	ownIDs         *commandIDs
	electionClient uint64
	electionSeq    atomic.Uint64
	ownInFlight    limiter

	// inc checks peers' incarnations (incarnation.go); recoverTo is the
	// commit index per group a recovering node catches up to.
	inc       *incarnations
	recoverTo []uint64

	// policy is the access rules and per-identity limits in force; ids
	// what each identity uses; warn rate-limits repeated warnings.
	policy atomic.Pointer[policy]
	ids    identities
	warn   *ratelog.Limiter

	// captures are group snapshots being read for a backup (backup.go).
	captures captures

	// mv is what this node knows of the members (members.go); mf the
	// member file as last written (memberfile.go), guarded by mfMu.
	mv   *memberView
	mfMu sync.Mutex
	mf   memberFile

	wg      sync.WaitGroup
	started time.Time // set by New, read-only after
	// clock is the clock of leases, the election and session expiry
	// (read through now): time.Now unless Config.TestClockRate is set
	// (tests only).
	clock func() time.Time
}

// New opens the node's store and endpoint. It does not serve until Run.
// It is NewContext without a context: a node that must first hear from the
// cluster (Config.Join, Config.RecoverFromPeers) waits for it unbounded.
func New(cfg Config) (*Server, error) {
	return NewContext(context.Background(), cfg)
}

// NewContext opens the node's store and endpoint. It does not serve until
// Run. A node on an empty data dir that enters a running cluster
// (Config.Join, Config.RecoverFromPeers) first waits, until ctx ends, for a
// member to tell it the cluster's founding configuration: a --join node
// hears from members once lockctl members add names it.
func NewContext(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("node", cfg.ID), hub: newHub(), metrics: newMetrics(), sessions: newSessionClock(), started: time.Now(), clock: testClock(cfg.TestClockRate)}
	s.ownInFlight.max = 256
	s.warn = ratelog.New(10 * time.Second)
	pol, err := newPolicy(cfg.ACLFile, s.baseLimits())
	if err != nil {
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	s.policy.Store(pol)
	var rb [8]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, fmt.Errorf("node %d: random command id: %w", cfg.ID, err)
	}
	own := binary.LittleEndian.Uint64(rb[:]) | 1<<63
	s.ownIDs = newCommandIDs(own)
	s.electionClient = own ^ 1

	st, err := pebblestore.Open(cfg.DataDir, pebblestore.Options{})
	if err != nil {
		return nil, fmt.Errorf("node %d: open data dir: %w", cfg.ID, err)
	}
	s.store = st
	// Before anything is read for serving: a data dir that lost or
	// damaged durable state must not vote (see pebblestore's doc).
	rep, err := st.Verify()
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	if cfg.RecoverFromPeers && !rep.Fresh && !st.Recovering() {
		st.Close()
		return nil, fmt.Errorf("node %d: %w", cfg.ID, ErrRecoverNotEmpty)
	}
	want := pebblestore.Meta{ClusterID: cfg.ClusterID, Groups: cfg.Groups, NodeID: uint32(cfg.ID)}
	if _, ok, err := st.LoadMeta(); err != nil {
		st.Close()
		return nil, err
	} else if !ok {
		if err := st.SaveMeta(want); err != nil {
			st.Close()
			return nil, err
		}
	}
	if err := st.CheckMeta(want); err != nil {
		st.Close()
		return nil, err
	}
	if cfg.Join && cfg.RecoverFromPeers {
		st.Close()
		return nil, fmt.Errorf("node %d: --join and --recover-from-peers do not go together: --join starts a new node id, --recover-from-peers re-creates an existing one", cfg.ID)
	}
	if s.mf, err = openMemberFile(&s.cfg, rep.Fresh); err != nil {
		st.Close()
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	s.mv = newMemberView(cfg.Peers, s.mf.addrs())
	if cfg.RecoverFromPeers {
		if err := st.SetRecovering(true); err != nil {
			st.Close()
			return nil, err
		}
	}
	s.inc = newIncarnations(cfg.ID, st, s.log)
	s.inc.send = s.sendHello

	s.groups = make([]*groupState, cfg.Groups)
	for i := range s.groups {
		s.groups[i] = &groupState{table: lease.New(lease.DefaultLimits()), fair: newFairQueue(groupProposalsInFlight, identityProposalsWaiting)}
		s.groups[i].table.SetOwnerHook(s.ids.ownerDelta)
	}
	if !s.mf.Pending {
		s.inc.setFounding(s.mf.initialNodes())
	}
	s.initOps()

	peers := map[quicnet.NodeID]string{}
	s.mv.mu.Lock()
	for id, addr := range s.mv.addrs {
		if id != cfg.ID {
			peers[quicnet.NodeID(id)] = addr
		}
	}
	s.mv.mu.Unlock()
	s.snap = newSnapXfer(cfg.ID, s.nodeIDs(), nil, st, s.log)
	s.qnode, err = quicnet.New(quicnet.Config{
		ID: quicnet.NodeID(cfg.ID), ListenAddr: cfg.Listen, PacketConn: cfg.PacketConn, Peers: peers,
		TLS: cfg.TLS, Handler: s.onPeerMessage, Logger: cfg.Logger, // quicnet adds the node id itself
		Lanes: snapLane + 1, // Paxos lanes, then the snapshot lane
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("node %d: listen on %s: %w", cfg.ID, cfg.Listen, err)
	}
	s.snap.setNode(s.qnode)
	s.meshUp.Store(true) // after s.qnode is set: see onPeerMessage
	if s.inc.isRecovering() {
		if s.recoverTo, err = s.startRecovery(ctx); err != nil {
			s.qnode.Close()
			st.Close()
			return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
		}
	}
	if s.mf.Pending {
		if err := s.awaitFounding(ctx); err != nil {
			s.qnode.Close()
			st.Close()
			return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
		}
	}
	// The groups start from the founding configuration of the member file
	// (the same on every restart and every node); the log's changes take it
	// from there.
	initial := s.mf.initialNodes()
	s.elector, err = election.New(election.Config{Self: cfg.ID, Nodes: initial, Groups: cfg.Groups, Lease: cfg.Lease})
	if err != nil {
		s.qnode.Close()
		st.Close()
		return nil, err
	}
	s.replica, err = replica.New(replica.Config{
		Core: paxos.Config{ID: cfg.ID, Nodes: initial, Groups: cfg.Groups, Window: cfg.Window,
			ElectionTicks: 20, HeartbeatTicks: 5, RetransmitTicks: 10},
		Tick:            cfg.Tick,
		GroupCommitWait: max(cfg.GroupCommitWait, 0),
		YieldGap:        max(cfg.YieldGap, 0),
		Store:           &meteredStore{Store: st, m: s.metrics},
		Transport:       &peerTransport{sendFrame: s.sendPeerFrame, lanes: quicnet.DefaultLanes, drops: s.metrics.peerDrops.Inc},
		StateMachine:    s,
		SnapshotEvery:   cfg.SnapshotEvery,
		SnapshotMargin:  cfg.SnapshotMargin,
		Fetcher:         s.snap,
		Logger:          s.log,
	})
	if err != nil {
		s.qnode.Close()
		st.Close()
		return nil, err
	}
	s.inc.mu.Lock()
	s.inc.status = s.groupMarks
	s.inc.mu.Unlock()
	s.ready.Store(s.replica)
	return s, nil
}

// Addr is the node's UDP address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.qnode.Addr() }

// Metrics returns the node's Prometheus registry.
func (s *Server) Metrics() *metrics { return s.metrics }

// Run serves until parent ends, then hands the groups this node holds over
// to other nodes (handOver), stops everything and closes the store.
func (s *Server) Run(parent context.Context) error {
	// Everything runs until the groups are handed over after parent ends.
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	defer cancel()
	defer context.AfterFunc(parent, func() { s.handOver(ctx); cancel() })()
	errc := make(chan error, 1)
	if s.cfg.Join {
		s.wg.Go(func() { s.waitToJoin(ctx) })
	}
	s.wg.Go(func() { s.watchMembers(ctx) })
	s.wg.Go(func() {
		select {
		case <-s.mv.removed:
			cancel()
		case <-ctx.Done():
		}
	})
	s.wg.Add(7)
	go func() {
		defer s.wg.Done()
		s.inc.run(ctx, s.nodeIDs)
	}()
	go func() {
		defer s.wg.Done()
		if s.recoverTo != nil {
			s.finishRecovery(ctx, s.recoverTo)
		}
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-s.inc.refusedc:
			s.log.Error("a peer refused this node", "err", s.inc.err())
			cancel()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer s.wg.Done()
		errc <- s.replica.Run(ctx)
		cancel()
	}()
	go func() {
		defer s.wg.Done()
		s.serveClients(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.expireLoop(ctx)
	}()
	s.wg.Go(func() { s.obs.run(ctx) })
	go func() {
		defer s.wg.Done()
		err := election.Run(ctx, s.elector, election.DriverConfig{
			Replica: s.replica,
			Command: s.electionCommand,
			PeerUp:  s.peerUp,
			Now:     s.now,
			Logger:  s.log,
		})
		if err != nil && ctx.Err() == nil {
			s.log.Error("election stopped", "err", err)
		}
	}()
	<-ctx.Done()
	s.qnode.Close()
	s.wg.Wait()
	err := <-errc
	if cerr := s.store.Close(); err == nil {
		err = cerr
	}
	if rerr := s.inc.err(); rerr != nil {
		return rerr
	}
	select {
	case <-s.mv.removed:
		return ErrRemoved
	default:
	}
	return err
}

// electionCommand wraps an election lease command into a Paxos command under
// the node's own command ids.
func (s *Server) electionCommand(g paxos.GroupID, lc election.LeaseCmd) paxos.Command {
	// The election driver does not say when a proposal ends, so these ids
	// never acknowledge anything (Ack 0); the Applier keeps the last 1024
	// outcomes, far more than the lease proposals ever in flight.
	seq := s.electionSeq.Add(1)
	return paxos.Command{ID: paxos.CommandID{Client: s.electionClient, Seq: seq}, Data: append([]byte{tagElection}, lc.Encode()...)}
}

// peerUp tells whether the mesh has a live connection to node n.
func (s *Server) peerUp(n paxos.NodeID) bool {
	for _, ps := range s.qnode.Stats() {
		if paxos.NodeID(ps.ID) == n {
			// A QUIC connection to a dead peer stays "connected" until its
			// idle timeout (15s); the mesh probes notice within a second.
			// Without them a node handed groups back to a peer that had
			// just been killed, and the group lost its master for a lease.
			if s.obs != nil && s.obs.peerState(n).State == "down" {
				return false
			}
			return ps.Connected
		}
	}
	return false
}
