package server

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/lockd/lockd/lease"
)

// IdentityLimits cap what one identity may hold on one node. Sessions,
// held locks and queued waits count the identity's state across every
// group (it is replicated, so every node counts the same); connections,
// streams, watches and the request rate count what it uses on this node.
// A request one past a cap is refused with an error naming the cap, and
// nothing else happens.
type IdentityLimits struct {
	Connections       int     `json:"connections"`
	StreamsPerConn    int     `json:"streams_per_connection"`
	Sessions          int     `json:"sessions"`
	HeldLocks         int     `json:"held_locks"`
	QueuedWaits       int     `json:"queued_waits"`
	Watches           int     `json:"watches"`
	MasterWatches     int     `json:"master_watches"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	RequestBurst      int     `json:"request_burst"`
	// ProposalsInFlight bounds the identity's commands in one group's
	// Paxos pipeline on its master at once; more wait in the identity's
	// own queue (fairq.go), so that its backlog never sits in front of
	// another identity's commands. 0 means the default.
	ProposalsInFlight int `json:"proposals_in_flight,omitempty"`
}

const (
	// defaultProposalsInFlight is IdentityLimits.ProposalsInFlight's
	// default: enough for one identity to fill a slot batch per round
	// trip, few enough that another identity's command waits behind a
	// short pipeline.
	defaultProposalsInFlight = 8
	// groupProposalsInFlight bounds every identity's commands in one
	// group's pipeline together; past it identities are admitted round
	// robin.
	groupProposalsInFlight = 1024
	// identityProposalsWaiting bounds the commands of one identity waiting
	// for admission to one group; past it they are refused as overloaded.
	identityProposalsWaiting = 4096
)

// proposalsInFlight is l.ProposalsInFlight or its default.
func (l IdentityLimits) proposalsInFlight() int {
	if l.ProposalsInFlight > 0 {
		return l.ProposalsInFlight
	}
	return defaultProposalsInFlight
}

// DefaultIdentityLimits fit a node on a 2-core machine: one identity
// cannot take more than a small share of its memory or CPU.
func DefaultIdentityLimits() IdentityLimits {
	return IdentityLimits{
		Connections:       64,     // ~120 KB each: 8 MB
		StreamsPerConn:    16,     // 1,024 streams per identity: ~90 MB at worst
		Sessions:          10_000, // replicated to every node
		HeldLocks:         100_000,
		QueuedWaits:       10_000,
		Watches:           10_000,
		MasterWatches:     64, // a goroutine each
		RequestsPerSecond: 5_000,
		RequestBurst:      10_000,
	}
}

func (l IdentityLimits) validate() error {
	for _, c := range []struct {
		name string
		v    int
	}{{"connections", l.Connections}, {"streams_per_connection", l.StreamsPerConn}, {"sessions", l.Sessions},
		{"held_locks", l.HeldLocks}, {"queued_waits", l.QueuedWaits}, {"watches", l.Watches},
		{"master_watches", l.MasterWatches}, {"request_burst", l.RequestBurst}} {
		if c.v < 1 || c.v > 1<<24 {
			return fmt.Errorf("%s is %d, want 1 to %d", c.name, c.v, 1<<24)
		}
	}
	if l.ProposalsInFlight < 0 || l.ProposalsInFlight > 1<<16 {
		return fmt.Errorf("proposals_in_flight is %d, want 1 to %d (or 0 for the default, %d)", l.ProposalsInFlight, 1<<16, defaultProposalsInFlight)
	}
	if l.RequestsPerSecond <= 0 || l.RequestsPerSecond > 1e7 {
		return fmt.Errorf("requests_per_second is %v, want above 0 and at most 1e7", l.RequestsPerSecond)
	}
	return nil
}

// identityState is what one identity uses on this node.
type identityState struct {
	mu sync.Mutex
	// counts are the identity's sessions, grants and waits in every
	// group's table (lease.Table owner hooks).
	counts lease.OwnerCounts
	// pending are sessions, grants and waits proposed but not yet applied.
	pending       lease.OwnerCounts
	conns         int
	watches       int
	masterWatches int
	proposals     int // client proposals in flight on this node, all groups
	tokens        float64
	last          time.Time
}

// identities tracks every identity this node has seen. Entries stay: there
// is one per client certificate name, which the CA bounds.
type identities struct {
	mu sync.Mutex
	m  map[string]*identityState
}

func (ids *identities) get(name string) *identityState {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.m == nil {
		ids.m = map[string]*identityState{}
	}
	st := ids.m[name]
	if st == nil {
		st = &identityState{}
		ids.m[name] = st
	}
	return st
}

// ownerDelta is every group table's owner hook.
func (ids *identities) ownerDelta(owner string, d lease.OwnerCounts) {
	if owner == "" {
		return
	}
	st := ids.get(owner)
	st.mu.Lock()
	st.counts.Sessions += d.Sessions
	st.counts.Held += d.Held
	st.counts.Waiting += d.Waiting
	st.mu.Unlock()
}

// limitError is the refusal of a request one past a cap.
func limitError(who, what string, n int, cap string) string {
	return fmt.Sprintf("identity %s already has %d %s on this cluster, the limit (%s): end some first", who, n, what, cap)
}

// reserve checks the session, grant and wait caps for one more of each
// kind asked for in want and, if they hold, counts it as pending until
// unreserve. It returns the refusal, or "".
func (st *identityState) reserve(who string, lim IdentityLimits, want lease.OwnerCounts) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.counts.Sessions + st.pending.Sessions; want.Sessions > 0 && n >= lim.Sessions {
		return limitError(who, "sessions", n, fmt.Sprintf("sessions per identity: %d", lim.Sessions))
	}
	if n := st.counts.Held + st.pending.Held; want.Held > 0 && n >= lim.HeldLocks {
		return limitError(who, "held locks", n, fmt.Sprintf("held_locks per identity: %d", lim.HeldLocks))
	}
	if n := st.counts.Waiting + st.pending.Waiting; want.Waiting > 0 && n >= lim.QueuedWaits {
		return limitError(who, "queued waits", n, fmt.Sprintf("queued_waits per identity: %d", lim.QueuedWaits))
	}
	st.pending.Sessions += want.Sessions
	st.pending.Held += want.Held
	st.pending.Waiting += want.Waiting
	return ""
}

func (st *identityState) unreserve(want lease.OwnerCounts) {
	st.mu.Lock()
	st.pending.Sessions -= want.Sessions
	st.pending.Held -= want.Held
	st.pending.Waiting -= want.Waiting
	st.mu.Unlock()
}

// take counts one more of a per-node resource (connections, watches,
// master watches) against max; it reports the count it found when full.
func (st *identityState) take(field *int, max int) (int, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if *field >= max {
		return *field, false
	}
	*field++
	return *field, true
}

func (st *identityState) give(field *int) {
	st.mu.Lock()
	*field--
	st.mu.Unlock()
}

// enterProposal counts one more client proposal of the identity in flight
// on this node, in any group, and reports whether it is the only one.
//
// Only such a command is proposed ahead (fairQueue says when it is light in
// its group; this says it is alone on the node), and so marked urgent in
// Paxos (paxos.Message.Urgent), which spares it the group-commit wait on
// every node. A sequential client (one lock operation at a time, the usual
// lock client) gets that on every command; an identity with many clients
// in flight gets none, so its writes keep sharing fsyncs across groups: with
// the per-group test alone, 16 clients of one identity over 4 groups often
// found a group with nothing of theirs in flight, and their throughput
// fell in each of four paired runs (by 10%, 10%, 1% and 31%) to unshared
// fsyncs (docs/benchmarks.md 8.5).
func (st *identityState) enterProposal() (sole bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.proposals++
	return st.proposals == 1
}

// leaveProposal counts one of the identity's proposals as done.
func (st *identityState) leaveProposal() { st.give(&st.proposals) }

// allow takes one request from the identity's token bucket.
func (st *identityState) allow(lim IdentityLimits, now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.last.IsZero() {
		st.tokens = float64(lim.RequestBurst)
	} else if dt := now.Sub(st.last).Seconds(); dt > 0 {
		st.tokens = min(float64(lim.RequestBurst), st.tokens+dt*lim.RequestsPerSecond)
	}
	st.last = now
	if st.tokens < 1 {
		return false
	}
	st.tokens--
	return true
}

// commandClient maps a client's own client id into the identity's own
// space of Paxos command ids, so that no identity can acknowledge, forget
// or replay another's commands: finding another identity's id would take
// a second preimage of SHA-256 truncated to 63 bits. Node ids (top bit
// set) stay apart. Legacy (identity "") keeps its id.
func commandClient(identity string, client uint64) uint64 {
	if identity == "" {
		return client
	}
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], client)
	h.Write([]byte(identity))
	h.Write([]byte{0})
	h.Write(b[:])
	var sum [sha256.Size]byte
	id := binary.LittleEndian.Uint64(h.Sum(sum[:0])) &^ (1 << 63)
	if id == 0 {
		id = 1
	}
	return id
}
