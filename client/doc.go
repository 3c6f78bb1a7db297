// Package client is the Go client of lockd: sessions with keep-alive, locks
// with fencing tokens, lock-loss notice, watches of locks and of masters,
// and routing to the master of each lock's group with failover.
//
// # Connecting
//
// New dials one endpoint and learns the cluster from it: its nodes, its
// group count (a lock name maps to a group by a fixed hash) and each
// group's master. Requests go to the master of their group over one QUIC
// connection per node, opened when first needed; a node that is not the
// master redirects, and the client follows. `lockd dev` writes a client
// config file that LoadConfigFile reads.
//
// # Membership changes
//
// The client follows the cluster's members as they change (lockctl members
// add, remove, replace), so it survives the replacement of every node in
// its endpoints. Every member list a node sends (Hello, ClusterStatus,
// WatchMasters) replaces the client's: a node that left is forgotten, and
// requests for any node go to the listed members only (the endpoints serve
// until the first list). A redirect or master change naming a node the
// client does not know adds it, and asks for the list again; so does a node
// that fails, since it may have left: the client sends a Hello to a member
// that is up, at most once a second, and once a minute in any case. When no
// member answers, it asks every address it ever knew, the endpoints too. So
// the endpoints need to hold a current member only when New is called.
//
// # Sessions and locks
//
// A Session is a lease on the cluster, kept alive in the background every
// TTL/3. Locks are held by sessions: Session.Acquire waits in the lock's
// FIFO queue until it is granted (the grant is pushed by the master, there
// is no polling), TryAcquire fails at once with ErrLockHeld. A Lock carries
// a fencing token, strictly greater than every earlier token of its name:
// give it to the resource the lock protects, and have the resource refuse
// older tokens, or ask Client.Validate.
//
// Lock.Lost closes as soon as the lock can no longer be trusted. The client
// counts the session's TTL from the send time of the last keep-alive that
// was answered, on its own monotonic clock, while the master counts from
// the receipt; and the client gives up a margin earlier (SessionOptions).
// So Lost closes before the master could expire the session and grant the
// lock to someone else.
//
// # Exactly once
//
// Every command (open and close session, acquire, release, cancel) carries
// an id, the client's random ID and a sequence number, and keeps it across
// every retry: after a redirect, a timeout, an "outcome unknown", a lost
// connection or a failover. The cluster applies an id once and answers a
// repeat with the first outcome. A waiting Acquire whose master changes is
// sent again, under its id, to the new master.
//
// # Retries
//
// A call retries with jittered backoff. A node that cannot be reached
// counts against a budget of 12 attempts (about 6–16 s), after which the
// call fails with ErrUnavailable. A live node that answers "retry shortly"
// (the group has no master right now, ask the master, overloaded) counts
// too when ctx has no deadline; when it has one, such answers are retried
// until the deadline, since an election can take longer on a busy machine,
// and the deadline's error names the last answer.
//
// # Errors
//
// Errors match the sentinels with errors.Is: ErrLockHeld, ErrLockLost,
// ErrSessionExpired, ErrNoMaster, ErrUnavailable, ErrClosed. Other
// refusals are an *Error with the node's Code and message.
//
// # Concurrency
//
// Client, Session and Lock are safe for concurrent use. Each connection
// has one goroutine that reads and hands every answer to the waiting call
// by its request ID; each Session has one keep-alive goroutine; each
// watched lock name and each WatchMasters has one. Requests run on the
// caller's goroutine, and every wait is bounded by a context or a timeout.
package client
