// Package wire is the client protocol of lockd: the messages a client and a
// node exchange over a QUIC stream (ALPN lockd-client/1), and their binary
// encoding.
//
// Every frame carries one Msg. Requests on one stream are worked on
// concurrently, so their responses may come in any order, and an event may
// arrive before the response to the request that opened it: match by ReqID.
// A request names a fresh ReqID; the node answers
// with exactly one TypeResponse with the same ReqID, and, for requests that
// open a stream (Watch, WatchMasters, a waiting Acquire), with any number of
// TypeEvent frames with that ReqID. The encoding is a list of (tag, value)
// fields, so fields can be added without breaking old peers; unknown tags are
// skipped. Decoding is bounded: see Decode.
package wire

import "time"

// Version is the protocol version, the first byte of every encoded Msg.
const Version = 1

// Type says what a Msg is.
type Type uint8

// Requests (client to node), then what the node sends back.
const (
	TypeHello Type = iota + 1
	TypeOpenSession
	TypeCloseSession
	TypeKeepAlive
	TypeAcquire
	TypeRelease
	TypeCancelWait
	TypeValidate
	TypeLockStatus
	TypeWatch
	TypeWatchMasters
	TypeClusterStatus
	TypeUnwatch
	// TypeSnapshot reads a group's snapshot from its master, one chunk at a
	// time (lockctl snapshot save; admin only). The first request has Epoch
	// 0: the master takes the snapshot and names it by the Epoch of its
	// answer; later requests give that Epoch and the Offset they want. Each
	// answer carries the snapshot's Slot, its Size, the Offset and the
	// bytes of the Chunk, and Name is the cluster's id.
	TypeSnapshot
	// TypeMembers reads one group's membership from its master (lockctl
	// members list; admin only): Members holds the newest configuration
	// the master knows, each member with Voter and Progress (the highest
	// commit index the master heard from it); Slot is the master's commit
	// index and Epoch the first slot the newest configuration governs.
	// FlagPending is set while that configuration is not yet in force
	// (Epoch above Slot) or another change is on its way.
	TypeMembers
	// TypeChangeMembers proposes one membership change in one group to its
	// master (lockctl members add/remove/replace; admin only): ChangeOp
	// says which, Members[0] names the node (ID, and Addr for an add). The
	// answer is CodeOK once the change is queued, not once it is in force:
	// read TypeMembers until it is. CodeChangePending, CodeNotCaughtUp and
	// CodeInvalid say why a change was refused.
	TypeChangeMembers

	// TypeResponse answers the request with the same ReqID.
	TypeResponse Type = 100
	// TypeEvent is pushed on a stream that a request opened (same ReqID).
	TypeEvent Type = 101
)

var typeNames = map[Type]string{
	TypeHello: "Hello", TypeOpenSession: "OpenSession", TypeCloseSession: "CloseSession",
	TypeKeepAlive: "KeepAlive", TypeAcquire: "Acquire", TypeRelease: "Release",
	TypeCancelWait: "CancelWait", TypeValidate: "Validate", TypeLockStatus: "LockStatus",
	TypeWatch: "Watch", TypeWatchMasters: "WatchMasters", TypeClusterStatus: "ClusterStatus",
	TypeUnwatch: "Unwatch", TypeSnapshot: "Snapshot", TypeMembers: "Members", TypeChangeMembers: "ChangeMembers",
	TypeResponse: "Response", TypeEvent: "Event",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "Type(" + itoa(uint64(t)) + ")"
}

// Code is the outcome of a request. Codes below 100 are the lock table's
// (lease.Code, same numbers); codes from 100 on are the service's.
type Code uint16

// Codes.
const (
	CodeOK             Code = 0
	CodeQueued         Code = 1
	CodeWouldBlock     Code = 2
	CodeNotFound       Code = 3
	CodeBadToken       Code = 4
	CodeSessionUnknown Code = 5
	CodeLimit          Code = 6
	CodeInvalid        Code = 7
	CodeModeConflict   Code = 8
	CodeStale          Code = 9
	// CodePermission: the identity of the connection may not do this: the
	// session belongs to another identity, or an access rule refuses it. Err
	// names the owner or the rule.
	CodePermission Code = 10

	// CodeNotMaster: this node does not serve the group; Hint and HintAddr
	// name the node that does (or zero when none is known yet). Retry there.
	CodeNotMaster Code = 100
	// CodeOverloaded: the node's queues are full. Retry after a short pause.
	CodeOverloaded Code = 101
	// CodeOutcomeUnknown: the node could not learn in time whether the
	// command took effect. Retry with the same (Client, Seq) to find out.
	CodeOutcomeUnknown Code = 102
	// CodeBadRequest: the request is malformed; Err says how.
	CodeBadRequest Code = 103
	// CodeUnavailable: the node is starting or stopping. Try another node.
	CodeUnavailable Code = 104
	// CodeResync: a watcher fell too far behind; it gets the current state
	// and must resubscribe from it.
	CodeResync Code = 105
	// CodeInternal: a bug or a storage failure on the node; Err says what.
	CodeInternal Code = 106
	// CodeChangePending: another membership change of the group is in
	// flight or not yet in force; retry once it is (TypeChangeMembers).
	CodeChangePending Code = 107
	// CodeNotCaughtUp: the learner to promote is still too far behind the
	// group's master; retry once it has caught up (TypeChangeMembers).
	CodeNotCaughtUp Code = 108
)

// Retryable reports whether a request that got c may be sent again as it is.
func (c Code) Retryable() bool {
	switch c {
	case CodeNotMaster, CodeOverloaded, CodeOutcomeUnknown, CodeUnavailable:
		return true
	}
	return false
}

// Flags are boolean options and answers.
type Flags uint32

// Flag bits.
const (
	FlagShared    Flags = 1 << iota // Acquire: a shared lock; holder items: shared
	FlagWait                        // Acquire: queue when the lock is held
	FlagStale                       // reads: a possibly stale answer is fine
	FlagDuplicate                   // Response: the command took effect earlier
	FlagValid                       // Validate: the token is the current holder's
	FlagHeld                        // LockStatus: the lock has a holder
	FlagState                       // lock event: Holders, HolderCount and Waiters hold the lock's state
	FlagPending                     // Members: a membership change is not yet in force
)

// MaxEventHolders bounds the holder items of one lock event: a change to a
// shared lock with many holders carries the first MaxEventHolders and the
// full count in HolderCount, so that a burst of shared grants costs each
// watcher O(changes), not O(changes × holders).
const MaxEventHolders = 64

// EventKind says what a TypeEvent reports.
type EventKind uint8

// Event kinds. The first four are the lock table's (lease.EventKind).
const (
	EventGranted  EventKind = 1
	EventReleased EventKind = 2
	EventExpired  EventKind = 3
	EventCanceled EventKind = 4
	// EventMaster: a group's master changed (Masters holds the change).
	EventMaster EventKind = 10
	// EventLost: the session that held or waited for the lock is gone.
	EventLost EventKind = 11
)

// KeepAliveItem names one session of a client in one group (request), and
// says whether it is still alive there (response Code).
type KeepAliveItem struct {
	Group   uint32
	Session uint64
	Code    Code
}

// MasterItem is a group's master as one node knows it. Master 0 means none.
type MasterItem struct {
	Group  uint32
	Epoch  uint64
	Master uint32
	Addr   string
	// Seq counts the master changes of the group's log (election.Event).
	Seq uint64
	// Cause is an election.Cause: why the master changed.
	Cause uint8
}

// HolderItem is one holder of a lock.
type HolderItem struct {
	Session  uint64
	Token    uint64
	Shared   bool
	Metadata []byte
}

// MemberItem is one node of the cluster. In a TypeMembers answer, Voter
// says whether the node votes (false: a learner) and Progress is the
// highest commit index the group's master heard from it.
type MemberItem struct {
	ID       uint32
	Addr     string
	Up       bool
	Voter    bool
	Progress uint64
}

// Membership change kinds (Msg.ChangeOp of TypeChangeMembers), the numbers
// of paxos.ChangeOp.
const (
	ChangeAddLearner uint8 = 1
	ChangePromote    uint8 = 2
	ChangeRemove     uint8 = 3
)

// Msg is every message of the protocol; each Type uses some of the fields.
type Msg struct {
	Type  Type
	ReqID uint64
	// Group is the Paxos group a lock name maps to (see GroupOf).
	Group uint32
	// Session is a session of the client in Group.
	Session uint64
	// Client and Seq identify a command for exactly-once retries; Ack says
	// the client knows the outcome of every Seq below it.
	Client uint64
	Seq    uint64
	Ack    uint64
	Name   string
	Token  uint64
	// TTL is a session's time to live; LockDelay a lock's delay after expiry.
	TTL       time.Duration
	LockDelay time.Duration
	Flags     Flags
	Metadata  []byte
	// Code and Err answer a request; Hint and HintAddr name the master.
	Code     Code
	Err      string
	Hint     uint32
	HintAddr string
	// Epoch orders master changes (WatchMasters: resume after this epoch).
	Epoch uint64
	// Slot is where a command took effect; in an event, the slot of the
	// command that caused it (a grant shares the releasing slot).
	Slot uint64
	// Node is the answering node; Groups the cluster's group count.
	Node   uint32
	Groups uint32
	// Kind is an event's kind; Waiters a lock's queue length.
	Kind    EventKind
	Waiters uint32
	// HolderCount is a lock event's number of holders (Holders may list
	// fewer: at most MaxEventHolders).
	HolderCount uint32

	// Offset, Size and Chunk carry a snapshot (TypeSnapshot): the bytes of
	// Chunk start at Offset of a snapshot of Size bytes.
	Offset uint64
	Size   uint64
	Chunk  []byte
	// Rules is the answering node's access rules digest in a
	// ClusterStatus answer ("none": no rules file), so that nodes with
	// different rules files can be spotted.
	Rules string
	// ChangeOp is a membership change's kind (TypeChangeMembers: one of
	// the Change constants).
	ChangeOp uint8

	KeepAlives []KeepAliveItem
	Masters    []MasterItem
	Holders    []HolderItem
	Members    []MemberItem
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
