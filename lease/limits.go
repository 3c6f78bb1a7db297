package lease

import (
	"fmt"
	"time"
)

// Ceilings that hold whatever the Limits say. The decoders refuse anything larger, so a
// corrupt or hostile input can never make them allocate more than these per field, and
// [Limits.Validate] refuses limits above them.
const (
	// NameBytesCeiling is the largest value Limits.MaxNameBytes may take.
	NameBytesCeiling = 4 << 10
	// MetadataBytesCeiling is the largest value Limits.MaxMetadataBytes may take.
	MetadataBytesCeiling = 64 << 10
	// CountCeiling is the largest value any count in Limits may take.
	CountCeiling = 1 << 24
	// TTLCeiling is the largest value Limits.MaxTTL may take.
	TTLCeiling = 7 * 24 * time.Hour
	// LockDelayCeiling is the largest value Limits.MaxLockDelay may take.
	LockDelayCeiling = time.Hour
	// IdentityBytesCeiling is the longest Command.Caller (a session owner's
	// identity: a certificate's CommonName).
	IdentityBytesCeiling = 256
)

// Limits bound what a command may ask for. Every field must be set; start from
// [DefaultLimits] and check the result with [Limits.Validate].
//
// Limits are replicated state: all replicas of a group must check the same limits, so
// they are stored in the snapshot and changed only through [OpSetLimits]. A change
// applies to later requests; state that exceeds a lowered limit is kept.
type Limits struct {
	// MaxNameBytes is the longest lock name, in bytes.
	MaxNameBytes int
	// MaxMetadataBytes is the largest metadata an acquire may attach, in bytes.
	MaxMetadataBytes int
	// MaxLocksPerSession bounds the locks one session holds plus those it waits for.
	MaxLocksPerSession int
	// MaxSessionsPerClient bounds the open sessions of one client.
	MaxSessionsPerClient int
	// MaxWaitersPerLock bounds the queue of one lock.
	MaxWaitersPerLock int
	// MinTTL is the shortest session TTL.
	MinTTL time.Duration
	// MaxTTL is the longest session TTL.
	MaxTTL time.Duration
	// MaxLockDelay is the longest lock-delay an acquire may ask for.
	MaxLockDelay time.Duration
}

// DefaultLimits returns the limits lockd uses unless configured otherwise. They fit the
// target of 1,000,000 held locks and 100,000 sessions per node.
func DefaultLimits() Limits {
	return Limits{
		MaxNameBytes:         512,
		MaxMetadataBytes:     4 << 10,
		MaxLocksPerSession:   10_000,
		MaxSessionsPerClient: 1_000,
		MaxWaitersPerLock:    10_000,
		MinTTL:               time.Second,
		MaxTTL:               24 * time.Hour,
		MaxLockDelay:         time.Minute,
	}
}

// Validate reports the first field that is out of range, by name, with the range it
// must be in. A nil result means New and OpSetLimits accept l.
func (l Limits) Validate() error {
	checks := []struct {
		field    string
		got      int64
		min, max int64
		duration bool
	}{
		{"MaxNameBytes", int64(l.MaxNameBytes), 1, NameBytesCeiling, false},
		{"MaxMetadataBytes", int64(l.MaxMetadataBytes), 0, MetadataBytesCeiling, false},
		{"MaxLocksPerSession", int64(l.MaxLocksPerSession), 1, CountCeiling, false},
		{"MaxSessionsPerClient", int64(l.MaxSessionsPerClient), 1, CountCeiling, false},
		{"MaxWaitersPerLock", int64(l.MaxWaitersPerLock), 1, CountCeiling, false},
		{"MinTTL", int64(l.MinTTL), int64(time.Millisecond), int64(TTLCeiling), true},
		{"MaxTTL", int64(l.MaxTTL), int64(l.MinTTL), int64(TTLCeiling), true},
		{"MaxLockDelay", int64(l.MaxLockDelay), 0, int64(LockDelayCeiling), true},
	}
	for _, c := range checks {
		if c.got >= c.min && c.got <= c.max {
			continue
		}
		if c.duration {
			return fmt.Errorf("lease: Limits.%s is %v, want %v to %v", c.field,
				time.Duration(c.got), time.Duration(c.min), time.Duration(c.max))
		}
		return fmt.Errorf("lease: Limits.%s is %d, want %d to %d", c.field, c.got, c.min, c.max)
	}
	return nil
}
