package paxos

import "fmt"

// MsgType is the kind of a Message.
type MsgType uint8

// Message kinds. Requests (Prepare, Accept, Commit, Fetch, FetchReply) carry no
// promise of the sender's durable state and may leave at once; replies that
// vouch for durable acceptor state (Promise, Accepted, Nack) only ever leave
// through Ready.AfterSync.
const (
	// MsgPrepare is phase 1a: Ballot, for every slot from Slot on.
	MsgPrepare MsgType = iota + 1
	// MsgPromise is phase 1b: the acceptor promised Ballot; Entries holds,
	// for each slot >= Slot it knows, its highest-ballot accepted value or
	// the chosen value.
	MsgPromise
	// MsgAccept is phase 2a: Entries[0] is the value for Entries[0].Slot
	// under Ballot.
	MsgAccept
	// MsgAccepted is phase 2b: the acceptor durably accepted Slot under Ballot.
	MsgAccepted
	// MsgNack refuses a Prepare or Accept: Ballot is the acceptor's promise,
	// which the proposer must beat. With Behind set, the acceptor refused
	// because the proposer's commit index is too far behind its own, and the
	// proposer must catch up (Fetch) first.
	MsgNack
	// MsgCommit is the master's heartbeat: Commit and Ballot only.
	MsgCommit
	// MsgFetch asks for the chosen entries from Slot on.
	MsgFetch
	// MsgFetchReply carries chosen entries, in slot order, from Slot on.
	MsgFetchReply
)

var msgTypeNames = [...]string{"", "Prepare", "Promise", "Accept", "Accepted", "Nack", "Commit", "Fetch", "FetchReply"}

func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) && t != 0 {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Message is the unit the core exchanges with peers. Every message carries the
// sender's commit index, which is how followers learn (all slots below Commit
// are chosen).
type Message struct {
	Type   MsgType
	Group  GroupID
	From   NodeID
	To     NodeID
	Ballot Ballot
	Slot   uint64
	Commit uint64
	Behind bool
	// Urgent, on an Accept, says that the slot holds a command its master
	// proposed ahead of its queue (Node.ProposeAhead): one of an identity
	// with nothing else in flight in the group. The acceptor's next Ready
	// carries Ready.Urgent, so that its runtime writes it at once instead
	// of waiting to share the sync with other groups' writes. It changes
	// when a write is synced, never what is written or answered.
	Urgent bool
	// Contended, on an urgent Accept, says more: the command was proposed
	// while its master was busy with other clients' commands. The
	// acceptor's Ready carries Ready.Contended, and its runtime holds its
	// other synced writes back for a while, so that its disk is free when
	// the light client's next write comes. Like Urgent, it changes when
	// writes are synced, never what is written or answered.
	Contended bool
	Entries   []Entry
}

func (m *Message) String() string {
	return fmt.Sprintf("%s g%d %d->%d b=%s slot=%d commit=%d entries=%d", m.Type, m.Group, m.From, m.To, m.Ballot, m.Slot, m.Commit, len(m.Entries))
}
