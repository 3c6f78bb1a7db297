package paxos

import "fmt"

// NodeID names a node of the cluster. Zero means "no node".
type NodeID uint32

// GroupID names a Paxos group of a node, from 0 to Config.Groups-1.
type GroupID uint32

// Ballot orders proposals. Ballots are unique per node because the node is part
// of the ballot; they are compared by Round first, then by Node. The zero
// Ballot is below every ballot a proposer uses.
type Ballot struct {
	Round uint64
	Node  NodeID
}

// Less reports whether b is below o.
func (b Ballot) Less(o Ballot) bool {
	if b.Round != o.Round {
		return b.Round < o.Round
	}
	return b.Node < o.Node
}

// IsZero reports whether b is the zero ballot.
func (b Ballot) IsZero() bool { return b == Ballot{} }

func (b Ballot) String() string { return fmt.Sprintf("%d.%d", b.Round, b.Node) }

// CommandID identifies a command for its whole life, across retries and
// re-proposals: Client is unique per client instance and Seq grows per client.
// The Applier applies each id at most once.
type CommandID struct {
	Client uint64
	Seq    uint64
}

func (id CommandID) String() string { return fmt.Sprintf("%d/%d", id.Client, id.Seq) }

// Command is one client request. Data is opaque to Paxos.
type Command struct {
	ID CommandID
	// Ack tells the Applier that the client has seen the outcome of every
	// sequence number below Ack, so their cached results may be dropped.
	Ack  uint64
	Data []byte
}

func (c *Command) size() int { return len(c.Data) + 24 }

// ValueID identifies a slot value. The ballot under which a master first
// proposed the value, plus a counter within that ballot, is unique: a ballot
// is durable before it is used and never reused (acceptor rule 4).
type ValueID struct {
	Ballot Ballot
	N      uint64
}

// Value is what one slot chooses: a batch of commands. A value without
// commands is a no-op, used to fill slots a new master found empty.
type Value struct {
	ID   ValueID
	Cmds []Command
}

// Size is the value's approximate encoded size in bytes.
func (v *Value) Size() int {
	n := 24
	for i := range v.Cmds {
		n += v.Cmds[i].size()
	}
	return n
}

// Entry is one slot of a group's log as an acceptor holds it: the value it
// accepted last and the ballot it accepted it under. Chosen marks an entry
// whose value is known to be chosen; such an entry never changes again.
type Entry struct {
	Slot   uint64
	Ballot Ballot
	Value  Value
	Chosen bool
}

// HardState is the durable per-group state besides the log.
//
// Invariant: every slot below Commit is chosen, and its stored entry, if the
// log still holds it and the slot is at or above the snapshot the node last
// installed or restarted from, holds the chosen value. Below that snapshot the
// store may keep an accept the node never learned the fate of (it skipped the
// slot by installing the snapshot); the core never reads those back.
type HardState struct {
	Promised Ballot
	Commit   uint64
}
