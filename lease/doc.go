// Package lease is the replicated lock table of lockd: sessions with a TTL, exclusive and
// shared locks, FIFO waiters, fencing tokens, lock-delay and expiry.
//
// A Table is a deterministic state machine. One Table serves one Paxos group; every
// replica of the group applies the same chosen commands, in log order, through
// [Table.Apply], and ends in the same state, byte for byte ([Table.Snapshot]). To keep
// that true the package has no clock, no randomness, no goroutines and no I/O, and it
// never lets Go's map iteration order reach a result, an event or a snapshot: wherever
// several items are visited, they are visited in a sorted order.
//
// # Time
//
// Time enters only as [Command.Now], the unix time in nanoseconds that the group master
// read when it proposed the command. The table's clock is the largest Now applied so far:
// it never goes back, even when a new master's clock is behind the old one's (then time
// simply stands still until the new clock catches up). Session TTLs are stored for the
// master, which decides expiry on its own monotonic clock and replicates it as
// [OpExpireSession]; the table never expires anything by itself.
//
// # Fencing tokens
//
// Every grant, immediate or to a waiter, takes the next value of one counter per
// table: the token is the number of grants this table has made since it was created,
// starting at 1. Tokens are therefore strictly increasing in log order for the whole
// table, and so for every lock name (a name always maps to the same group, hence the
// same table). The counter is part of the snapshot, so the rule holds across restarts,
// master changes and snapshot installs. Token 0 is never issued.
//
// # Lock-delay
//
// A lock freed because its holder's session expired (not released, not closed) is not
// granted again, to anyone, until the table's clock reaches the expiry time plus the
// lock-delay the holder asked for when it acquired the lock ([Command.LockDelay]; the
// default is 0, no delay; the maximum is [Limits.MaxLockDelay]). During a lock-delay
// nothing is granted on that lock, not even a shared request next to surviving shared
// holders, so that a paused old holder has time to notice it lost the lock.
// [Table.NextDeadline] tells the master when a lock-delay ends, and an [OpTick] (or any
// later command) then grants the waiters.
//
// # Fairness
//
// Waiters are granted strictly in FIFO order: the head of the queue is one exclusive
// request, or a run of shared requests granted together. A new request is granted at
// once only when nobody waits: a shared request never overtakes a queued exclusive one.
// Waiters of a session that ends are removed in the same command, so a grant never goes
// to a dead session.
//
// # Limits
//
// [Limits] bound names, metadata, locks per session, sessions per client, waiters per
// lock, TTLs and lock-delays. They are part of the replicated state (they are in the
// snapshot and change only through [OpSetLimits]), because two replicas that checked
// different limits would decide differently.
package lease
