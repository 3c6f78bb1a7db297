package paxos

import (
	"errors"
	"fmt"
)

// Config sets up a Node. Validate checks it once, with errors that name the
// field; New calls Validate.
type Config struct {
	// ID is this node. It is one of Nodes, or a node that joins later: it
	// then waits as a non-member until a membership change adds it.
	ID NodeID
	// Nodes lists the voters of every group's initial configuration, the
	// one that governs slot 0 (3 or 5 usually). It must be the same on every
	// node of a cluster for its whole life: membership changes (see
	// membership.go) are chosen in the log on top of it.
	Nodes []NodeID
	// Groups is the number of Paxos groups (default 16, up to 4096).
	Groups int
	// Window is the number of slots a master may have in flight per group
	// (default 64). 1 makes the protocol serial.
	Window int
	// MaxBatchCommands and MaxBatchBytes bound one slot's value
	// (defaults 1024 commands and 32 KiB).
	MaxBatchCommands int
	MaxBatchBytes    int
	// MaxPendingBytes bounds a group's queue of commands waiting for a slot;
	// Propose returns ErrOverloaded beyond it (default 16 MiB).
	MaxPendingBytes int
	// ElectionTicks is how long a follower waits without hearing from a
	// master before it campaigns (default 10); the node's distance from the
	// group's preferred master (group mod nodes) multiplies it, and a random
	// amount up to ElectionTicks is added.
	ElectionTicks int
	// HeartbeatTicks is how often an idle master sends its commit index
	// (default 2).
	HeartbeatTicks int
	// RetransmitTicks is how long a proposer waits for a reply before it sends
	// a request again (default 4).
	RetransmitTicks int
	// AutoCampaign lets the node start phase 1 by itself when a group has no
	// live master. The election package turns it off and calls Campaign.
	AutoCampaign bool
	// Contend makes every node propose its own commands itself: Propose never
	// redirects, and a node with queued commands campaigns until they are
	// chosen. It models proposers on every node without a stable master.
	Contend bool
	// MaxFetchEntries bounds the entries of one FetchReply, and how far a
	// proposer's commit index may lag an acceptor's before the acceptor
	// tells it to catch up first instead of promising (default 64).
	MaxFetchEntries int
	// Rand returns pseudo-random numbers in [0, n). It is injected so that
	// one seed replays one history. Required.
	Rand func(n int) int
	// SnapshotMembership returns the membership stored with group g's
	// newest snapshot (the one SnapshotStorage.SnapshotSlot names). New
	// calls it for every group that has a snapshot. Nil, or a Membership
	// without epochs, means the initial one (Nodes): right for snapshots
	// written before membership changes existed.
	SnapshotMembership func(g GroupID) (Membership, error)

	// changeDelay overrides ChangeDelay, for the simulator only (it must be
	// the same on every node).
	changeDelay uint64

	// mutate switches on deliberately broken rules, for the simulator's
	// mutation tests only. It is unexported so that no user can set it.
	mutate mutation
}

// mutation is a set of deliberate rule breaks that the simulator must catch.
type mutation uint32

const (
	// mutAcceptNoRaise: an accept does not raise the promise.
	mutAcceptNoRaise mutation = 1 << iota
	// mutAcceptIgnorePromise: an accept below the promise is taken anyway.
	mutAcceptIgnorePromise
	// mutPhase2OwnValue: phase 2 ignores the values reported in phase 1.
	mutPhase2OwnValue
	// mutReplyBeforeSync: promises and accepts leave before they are durable.
	mutReplyBeforeSync
	// mutMasterKeepsLostSlot: the rule before issue 8: a master that learns
	// that a slot where it proposed under its ballot chose another value
	// stays master, and its commit index covers that slot.
	mutMasterKeepsLostSlot
	// mutStepDownOnHigherBallot: the obvious patch, which is not enough: such
	// a master steps down only when the chosen entry it installs carries a
	// ballot above its own.
	mutStepDownOnHigherBallot
	// mutPrepareConfQuorum: every quorum of a ballot is counted against the
	// configuration its master prepared under, not the slot's.
	mutPrepareConfQuorum
	// mutNoChangeDelay: a master proposes beyond the slots whose
	// configuration it knows, taking the newest it knows for them.
	mutNoChangeDelay
)

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Groups, 16)
	def(&c.Window, 64)
	def(&c.MaxBatchCommands, 1024)
	def(&c.MaxBatchBytes, 32<<10)
	def(&c.MaxPendingBytes, 16<<20)
	def(&c.ElectionTicks, 10)
	def(&c.HeartbeatTicks, 2)
	def(&c.RetransmitTicks, 4)
	def(&c.MaxFetchEntries, 64)
	return c
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.ID == 0 {
		return errors.New("paxos config: ID must be set (node ids start at 1)")
	}
	if len(c.Nodes) == 0 {
		return errors.New("paxos config: Nodes must list the cluster's nodes")
	}
	seen := map[NodeID]bool{}
	for _, n := range c.Nodes {
		if n == 0 {
			return errors.New("paxos config: Nodes contains 0; node ids start at 1")
		}
		if seen[n] {
			return fmt.Errorf("paxos config: Nodes lists node %d twice", n)
		}
		seen[n] = true
	}
	checks := []struct {
		name     string
		v, lo, h int
	}{
		{"Groups", c.Groups, 1, 4096},
		{"Window", c.Window, 1, 4096},
		{"MaxBatchCommands", c.MaxBatchCommands, 1, 1 << 20},
		{"MaxBatchBytes", c.MaxBatchBytes, 64, 64 << 20},
		{"MaxPendingBytes", c.MaxPendingBytes, 1, 1 << 34},
		{"ElectionTicks", c.ElectionTicks, 1, 1 << 20},
		{"HeartbeatTicks", c.HeartbeatTicks, 1, 1 << 20},
		{"RetransmitTicks", c.RetransmitTicks, 1, 1 << 20},
		{"MaxFetchEntries", c.MaxFetchEntries, 1, 1 << 20},
	}
	for _, ch := range checks {
		if ch.v < ch.lo || ch.v > ch.h {
			return fmt.Errorf("paxos config: %s is %d, want %d to %d", ch.name, ch.v, ch.lo, ch.h)
		}
	}
	if c.HeartbeatTicks >= c.ElectionTicks {
		return fmt.Errorf("paxos config: HeartbeatTicks (%d) must be below ElectionTicks (%d), or followers campaign against a live master", c.HeartbeatTicks, c.ElectionTicks)
	}
	// A Promise carries up to MaxFetchEntries chosen slots plus the slots in
	// flight; it must fit one encoded message (DefaultLimits).
	if n := c.MaxFetchEntries + 2*c.Window; n > DefaultLimits().MaxEntries {
		return fmt.Errorf("paxos config: MaxFetchEntries + 2*Window is %d; a Promise could exceed %d entries", n, DefaultLimits().MaxEntries)
	}
	if b := (c.MaxFetchEntries + 2*c.Window) * c.MaxBatchBytes; b > maxPromiseBytes {
		return fmt.Errorf("paxos config: (MaxFetchEntries + 2*Window) * MaxBatchBytes is %d bytes; a Promise could exceed %d: lower MaxBatchBytes", b, maxPromiseBytes)
	}
	if c.Rand == nil {
		return errors.New("paxos config: Rand must be set (a seeded source keeps the core deterministic)")
	}
	return nil
}

const (
	// maxPromiseBytes keeps a Promise within the codec's message limit.
	maxPromiseBytes = 6 << 20
	// maxFetchBytes bounds one FetchReply.
	maxFetchBytes = 1 << 20
)

// delay is alpha, ChangeDelay unless the simulator sets it.
func (c *Config) delay() uint64 {
	if c.changeDelay > 0 {
		return c.changeDelay
	}
	return ChangeDelay
}
