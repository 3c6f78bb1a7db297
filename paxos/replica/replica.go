// Package replica is the runtime of one lockd node's Paxos groups: one
// goroutine that owns the pure paxos core and drives it with a clock, a store
// and a transport, and that applies chosen commands to the state machines.
//
// One loop iteration takes in every message and proposal that is waiting (up
// to a bound), lets the core produce one Ready for all groups, and then:
// sends what may leave at once, persists every group's changes with one
// synced write (group commit across groups), sends the replies that needed
// that write, applies chosen slots and answers the callers waiting on them.
// While the write is in flight, new work queues up and goes into the next
// Ready, so the batches grow with the load.
package replica

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Store is the node's durable Paxos state. Save must write all of its
// argument atomically and durably (one synced batch) before it returns.
type Store interface {
	paxos.Storage
	Save(writes []paxos.GroupWrite) error
}

// UnsyncedSaver is implemented by stores that can write without a sync.
// The replica uses it for a Ready that only moves commit indexes
// (paxos.Ready.MustSync false), so that learning a slot is chosen costs no
// fsync before the command is applied and answered. Such a write must become
// durable with the next synced write, in order (a write-ahead log does this).
type UnsyncedSaver interface {
	SaveUnsynced(writes []paxos.GroupWrite) error
}

// Transport carries messages to peers. Send must not block: a transport whose
// queue for a peer is full drops the message, and Paxos sends it again.
type Transport interface {
	Send(msgs []paxos.Message)
}

// StateMachine is what chosen commands are applied to, in slot order per
// group. Apply runs on the replica's goroutine and must not block.
type StateMachine interface {
	Apply(g paxos.GroupID, slot uint64, index int, cmd *paxos.Command) []byte
}

// ErrOutcomeUnknown is returned by Propose when its context ended before the
// command's fate was known. The command may still take effect; proposing it
// again with the same id is safe and tells the outcome.
var ErrOutcomeUnknown = errors.New("replica: context ended before the command was chosen; its outcome is unknown, retry with the same command id")

// ErrForgotten is returned for a command whose id its client had already
// acknowledged (Command.Ack went past it): it took effect, or was given up,
// long ago, and its outcome is no longer kept. It is final: retrying the
// same id cannot tell more; a new command needs a new sequence number.
var ErrForgotten = errors.New("replica: the command's id was acknowledged earlier and its outcome is forgotten; send new commands with new sequence numbers")

// ErrStopped is returned once the replica has stopped.
var ErrStopped = errors.New("replica: stopped")

// Config sets up a Replica.
type Config struct {
	// Core configures the Paxos core. Core.Rand may be left nil: the
	// replica seeds one from the clock.
	Core paxos.Config
	// Tick is the length of one core tick (default 10ms).
	Tick time.Duration
	// Store, Transport and StateMachine are required.
	Store        Store
	Transport    Transport
	StateMachine StateMachine
	// InboxSize bounds the queue of messages from peers (default 65536);
	// beyond it messages are dropped and Paxos retries them.
	InboxSize int
	// ProposalQueue bounds waiting proposals (default 65536); beyond it
	// Propose returns paxos.ErrOverloaded.
	ProposalQueue int
	// GroupCommitWait, when set, lets a synced write wait up to that long
	// for the groups that had a synced write in the last 2ms and have
	// nothing in this batch yet, so that groups whose masters sit on
	// different nodes share one fsync instead of each paying for its own.
	// It stops waiting as soon as they are all in. A node with one busy
	// group never waits. Measured with lockctl bench (16 clients, 4 groups,
	// 3 nodes on one disk): 400µs cuts synced writes per proposal from 0.69
	// to 0.39, as with one group; with BenchmarkCommitQUIC (8 groups,
	// LOCKD_GROUP_COMMIT_WAIT) 200µs takes 3.1k commits/s to 7.8k, and one
	// group is unchanged. Zero turns it off.
	GroupCommitWait time.Duration
	// YieldGap, when set, keeps the disk free for light clients while they
	// compete with heavy ones (issue 10): for a second after it wrote a
	// contended accept (paxos.Ready.Contended: a light client's command
	// proposed while its master was busy with others'), the persister
	// lets a synced write that is not urgent wait until YieldGap has passed
	// since its previous synced write ended, gathering whatever comes
	// meanwhile into the same batch. An urgent write ends the wait at once
	// and takes the batch along, so the light client's write never waits
	// for it. Only when writes are synced changes, never what is written
	// or in which order. Zero turns it off.
	YieldGap time.Duration
	// MaxClients bounds the command ids remembered for exactly-once
	// application, per group (default 100000).
	MaxClients int
	// SnapshotEvery is how many applied slots of a group lead to a new
	// snapshot of it (default DefaultSnapshotEvery; negative: never). It
	// takes effect when the Store is a SnapshotStore and the StateMachine a
	// Snapshotter. SnapshotMargin is how many slots below a snapshot the
	// log keeps for peers slightly behind (default DefaultSnapshotMargin).
	SnapshotEvery  int
	SnapshotMargin uint64
	// Fetcher transfers snapshots from peers for a node that fell behind
	// their logs; without one such a node cannot catch up.
	Fetcher SnapshotFetcher
	// Logger receives the replica's logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Store == nil {
		return errors.New("replica config: Store is required")
	}
	if c.Transport == nil {
		return errors.New("replica config: Transport is required")
	}
	if c.StateMachine == nil {
		return errors.New("replica config: StateMachine is required")
	}
	if c.Tick == 0 {
		c.Tick = 10 * time.Millisecond
	}
	if c.Tick < time.Millisecond {
		return fmt.Errorf("replica config: Tick is %v, want at least 1ms", c.Tick)
	}
	if c.InboxSize == 0 {
		c.InboxSize = 1 << 16
	}
	if c.ProposalQueue == 0 {
		c.ProposalQueue = 1 << 16
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = DefaultSnapshotEvery
	}
	if c.SnapshotMargin == 0 {
		c.SnapshotMargin = DefaultSnapshotMargin
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Result is the outcome of a successful proposal.
type Result struct {
	Group paxos.GroupID
	// Slot and Index say where the command took effect.
	Slot  uint64
	Index int
	// Value is what the state machine returned.
	Value []byte
	// Duplicate is set when an earlier proposal of the same id took effect
	// (at Slot) and this one was not applied again.
	Duplicate bool
}

type proposal struct {
	group paxos.GroupID
	cmd   paxos.Command
	// enter is how the command enters the core: (*paxos.Node).Propose,
	// ProposeAhead or ProposeContended.
	enter    func(*paxos.Node, paxos.GroupID, paxos.Command) error
	done     chan outcome
	deadline time.Time
}

type outcome struct {
	res Result
	err error
}

type waiter struct {
	done     chan outcome
	deadline time.Time
}

// Replica runs a node's groups. Create it with New, start it with Run.
type Replica struct {
	cfg       Config
	core      *paxos.Node
	inbox     chan paxos.Message
	proposals chan proposal
	queries   chan func(*paxos.Node)
	stopped   chan struct{}
	err       error // why Run stopped; read after stopped is closed

	// persist carries Readys to the persister goroutine, in order; durable
	// brings them back once written. At most cap(persist) Readys wait, so
	// the loop stalls rather than run ahead of the disk without bound.
	persist chan paxos.Ready
	durable chan []paxos.Ready

	// installs brings finished snapshot transfers to the loop.
	installs  chan installJob
	installed atomic.Int64 // snapshots installed from peers
	// saved brings the loop its snapshots, encoded and saved on goroutines
	// of their own (saves waits for them); at most one runs per group, and
	// the channel has room for one per group, so a save never blocks.
	saved chan savedSnapshot
	saves sync.WaitGroup

	// recent is how long ago a group's synced write counts as recent for
	// the group-commit wait (recentWrite; tests lengthen it so that what
	// they check does not depend on the machine's speed).
	recent time.Duration
	// waiting, when set (tests), is called as the persister begins a
	// group-commit wait.
	waiting func()
	// yieldFor is how long after a contended write the persister yields
	// (YieldGap; yieldWindow, tests lengthen it); yielding, when set
	// (tests), is called as it begins such a wait.
	yieldFor time.Duration
	yielding func()
	yields   atomic.Int64 // yield waits begun (Yields)

	// Owned by the Run goroutine.
	appliers []*paxos.Applier
	waiters  map[paxos.CommandID][]waiter
	ticks    int
	next     []uint64 // per group: the next slot to apply
	// ms is, per group, the membership as of next (kept in snapshots).
	ms       []paxos.Membership
	snapAt   []uint64 // per group: the slot of its newest snapshot
	saving   []bool   // per group: a snapshot is being encoded and saved
	fetching map[paxos.GroupID]bool
}

// Yields counts the times the persister held a synced write back to leave
// the disk to a light identity (Config.YieldGap).
func (r *Replica) Yields() int64 { return r.yields.Load() }

// SnapshotsInstalled counts the snapshots this replica installed from peers.
func (r *Replica) SnapshotsInstalled() int64 { return r.installed.Load() }
