package lease

import (
	"strconv"
	"time"
)

// Op is the kind of a Command. The numeric values are part of the wire format and never
// change meaning.
type Op uint8

// The operations a Command can carry. Each lists the Command fields it reads; the others
// are ignored and not encoded.
const (
	// OpOpenSession creates a session for Client with the given TTL (between
	// Limits.MinTTL and Limits.MaxTTL). Result.Session is the new session's ID.
	OpOpenSession Op = 1
	// OpCloseSession ends Session at its owner's request: its locks are released (no
	// lock-delay) and its waits removed.
	OpCloseSession Op = 2
	// OpExpireSession ends Session because the master decided its TTL ran out: its locks
	// are freed by expiry (the lock-delay applies) and its waits removed. An unknown
	// Session is a no-op that answers CodeSessionUnknown.
	OpExpireSession Op = 3
	// OpAcquire asks for Name on behalf of Session, Shared or exclusive, with Metadata
	// and LockDelay kept with the grant. When the lock cannot be granted now, Wait
	// queues the request (CodeQueued) and !Wait fails it (CodeWouldBlock).
	OpAcquire Op = 4
	// OpRelease gives up Session's grant of Name, named by its Token.
	OpRelease Op = 5
	// OpCancelWait takes Session's request for Name out of the queue.
	OpCancelWait Op = 6
	// OpTick only brings the table's clock forward to Now, so that locks whose
	// lock-delay ended are granted to their waiters.
	OpTick Op = 7
	// OpSetLimits replaces the table's limits with Limits.
	OpSetLimits Op = 8
	// OpRaiseTokenFloor raises the table's token counter to Token when it is lower, so
	// that every later grant takes a token above Token. A cluster restored from a backup
	// proposes it before anything else (lockd restore): the backup is older than the
	// cluster it was taken from, which may have granted tokens after it.
	OpRaiseTokenFloor Op = 9
)

const maxOp = OpRaiseTokenFloor

var opNames = [...]string{
	OpOpenSession:     "open-session",
	OpCloseSession:    "close-session",
	OpExpireSession:   "expire-session",
	OpAcquire:         "acquire",
	OpRelease:         "release",
	OpCancelWait:      "cancel-wait",
	OpTick:            "tick",
	OpSetLimits:       "set-limits",
	OpRaiseTokenFloor: "raise-token-floor",
}

// String returns the operation's name, as used in error messages.
func (o Op) String() string {
	if o >= 1 && o <= maxOp {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Command is one entry of the replicated log for the lock table. Op says which fields
// matter (see the Op constants); [Command.Encode] writes only those, so a decoded Command
// has every other field at its zero value.
type Command struct {
	// Op is the operation; it decides which other fields are read.
	Op Op
	// Now is the unix time in nanoseconds the group master read when it proposed the
	// command. The table's clock becomes max(its clock, Now).
	Now int64
	// Client identifies the owner of a new session (OpOpenSession).
	Client uint64
	// TTL is the new session's time to live (OpOpenSession). The master expires the
	// session when it has not heard from the client for that long.
	TTL time.Duration
	// Session is the session the command acts for.
	Session uint64
	// Name is the lock name: non-empty, at most Limits.MaxNameBytes bytes. The table
	// keeps the string as given; DecodeCommand gives every name its own allocation.
	Name string
	// Shared asks for a shared rather than an exclusive grant (OpAcquire).
	Shared bool
	// Wait queues the request when it cannot be granted now (OpAcquire).
	Wait bool
	// Metadata is kept with the grant and shown to others by Table.Lock (OpAcquire).
	// The table copies it.
	Metadata []byte
	// LockDelay is how long the lock stays ungranted if this grant ends by session
	// expiry (OpAcquire). The default, 0, means no delay.
	LockDelay time.Duration
	// Token names the grant to release (OpRelease), or the floor of later tokens
	// (OpRaiseTokenFloor).
	Token uint64
	// Limits are the new limits (OpSetLimits).
	Limits Limits
	// Caller is the authenticated identity the command is proposed for (every op
	// but OpTick, OpExpireSession and OpSetLimits). OpOpenSession makes it the new
	// session's owner; OpCloseSession, OpAcquire, OpRelease and OpCancelWait are
	// refused with CodePermission when the session has another owner. An empty
	// Caller (commands logged before identities existed, and the node's own
	// commands) is not checked. At most IdentityBytesCeiling bytes.
	Caller string
	// Admin lets Caller close or release under a session of another owner
	// (OpCloseSession, OpRelease); the proposing node decided that its access
	// rules allow it. Other ops ignore it.
	Admin bool
}

// Position is a command's place in the log: the Paxos slot, and the index of the command
// within the batch chosen for that slot. Positions given to one Table must strictly
// increase; Apply refuses any other as already applied.
type Position struct {
	// Slot is the Paxos slot (log index) the command was chosen in.
	Slot uint64
	// Index is the command's place in the batch chosen for Slot, from 0.
	Index uint32
}

// Less reports whether p comes before q in the log.
func (p Position) Less(q Position) bool {
	return p.Slot < q.Slot || (p.Slot == q.Slot && p.Index < q.Index)
}

// String formats p as "slot.index".
func (p Position) String() string {
	return strconv.FormatUint(p.Slot, 10) + "." + strconv.FormatUint(uint64(p.Index), 10)
}
