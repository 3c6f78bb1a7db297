package protomodel

import (
	"fmt"
	"slices"
	"strings"
)

// Bounds on the configurations the model accepts. The vote and ack sets are
// bitmasks of one bit per (acceptor, ballot, slot), so Nodes*Ballots*Slots
// must also fit in 64.
const (
	MaxNodes   = 7
	MaxBallots = 4
	MaxSlots   = 3
)

// Rule is what a master does when it learns that a slot is chosen.
type Rule uint8

const (
	// RuleOld is the rule of issue 8: a master keeps its role whatever it
	// learns, and goes on announcing its commit index under its ballot.
	RuleOld Rule = iota
	// RuleNew is the fix of issue 8: a master that learns a slot chosen
	// (by any path) with a value other than the one it proposed there under
	// its current ballot steps down at once, before it can announce a commit
	// index past that slot.
	RuleNew
	// RuleBallotCompare is the patch issue 8 rejects: a master that installs,
	// from a FetchReply, a chosen entry whose ballot is above its own steps
	// down. The ballot on a chosen entry can be older than the ballot it was
	// chosen under, so this is not enough.
	RuleBallotCompare
)

func (r Rule) String() string {
	switch r {
	case RuleOld:
		return "old"
	case RuleNew:
		return "new"
	case RuleBallotCompare:
		return "ballot-compare"
	}
	return fmt.Sprintf("Rule(%d)", uint8(r))
}

// Fault plants a deliberately broken rule, so that tests can show the checker
// fails when a rule it relies on is broken. Faults combine as a bit set.
type Fault uint8

const (
	// FaultAcceptIgnoresPromise: an acceptor accepts an Accept whose ballot
	// is below its promise (acceptor rule 2 broken).
	FaultAcceptIgnoresPromise Fault = 1 << iota
	// FaultAcceptNoRaise: an acceptor does not raise its promise to the
	// ballot of an Accept it takes (the second half of rule 2).
	FaultAcceptNoRaise
	// FaultPhase2OwnValue: a new master ignores the values in the promises
	// and proposes its own value everywhere (rule 5 broken).
	FaultPhase2OwnValue
	// FaultCountEarlierBallot: a master counts Accepted votes of its own
	// earlier ballots toward its current one (the m.Ballot != g.ballot
	// check on Accepted dropped).
	FaultCountEarlierBallot
	// FaultAckChosen: an acceptor that already knows a slot is chosen (or
	// has committed past it) answers Accepted to any Accept for that slot,
	// whatever its value, without recording a vote. This is what
	// paxos/acceptor.go onAccept did when this model was written; with
	// the fault off the acceptor acknowledges only the chosen value itself.
	FaultAckChosen
)

// Config bounds one exhaustive check.
type Config struct {
	// Nodes is the number of nodes; each is an acceptor and a learner.
	Nodes int
	// Owners[i] is the node (0-based) that owns ballot i+1. Ballots are
	// ordered by their index: ballot i+2 is above ballot i+1. Each ballot
	// is campaigned for at most once, like a real ballot that is never
	// reused (acceptor rule 4).
	Owners []int
	// Slots is the number of log slots.
	Slots int
	// Rule is what a master does on learning a chosen slot.
	Rule Rule
	// Faults plants broken rules; zero for the protocol as specified.
	Faults Fault
	// SkipCommitInvariant turns off the local commit invariant, so that the
	// search goes on to the distant consequence (two nodes taking different
	// values for one slot).
	SkipCommitInvariant bool
	// NoSymmetry turns off the symmetry reduction over the nodes that own
	// no ballot (for checking the reduction itself).
	NoSymmetry bool
	// MaxStates caps the number of distinct states; zero means 20 million.
	MaxStates int
}

func (c *Config) validate() error {
	if c.Nodes < 1 || c.Nodes > MaxNodes {
		return fmt.Errorf("protomodel: %d nodes, want 1..%d", c.Nodes, MaxNodes)
	}
	if len(c.Owners) < 1 || len(c.Owners) > MaxBallots {
		return fmt.Errorf("protomodel: %d ballots, want 1..%d", len(c.Owners), MaxBallots)
	}
	for _, o := range c.Owners {
		if o < 0 || o >= c.Nodes {
			return fmt.Errorf("protomodel: ballot owner %d is not a node", o)
		}
	}
	if c.Slots < 1 || c.Slots > MaxSlots {
		return fmt.Errorf("protomodel: %d slots, want 1..%d", c.Slots, MaxSlots)
	}
	if c.Nodes*len(c.Owners)*c.Slots > 64 {
		return fmt.Errorf("protomodel: nodes*ballots*slots = %d, above 64", c.Nodes*len(c.Owners)*c.Slots)
	}
	return nil
}

func (c *Config) quorum() int { return c.Nodes/2 + 1 }

func (c *Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d nodes, %d ballots (owners", c.Nodes, len(c.Owners))
	for _, o := range c.Owners {
		fmt.Fprintf(&b, " %s", nodeName(o))
	}
	fmt.Fprintf(&b, "), %d slots, rule %v", c.Slots, c.Rule)
	if c.Faults != 0 {
		fmt.Fprintf(&b, ", faults %#x", uint8(c.Faults))
	}
	return b.String()
}

// Entry is one slot as an acceptor holds it: the ballot and value it accepted
// last (or installed as chosen), and whether it knows the value is chosen.
// Ballot and value 0 mean "no entry".
type Entry struct {
	B, V   uint8
	Chosen bool
}

// node is the acceptor and learner state of one node.
type node struct {
	Promised uint8
	Commit   uint8
	Log      [MaxSlots]Entry
}

// Proposer phases of one ballot.
const (
	phaseIdle      uint8 = iota // not campaigned for yet
	phasePreparing              // Prepare sent to every node
	phaseMaster                 // won phase 1, runs phase 2
	phaseDone                   // stepped down or replaced by a later ballot of its node
)

// prop is the proposer state of one ballot.
type prop struct {
	Phase uint8
	From  uint8           // the slot phase 1 starts at (the node's commit index)
	Next  uint8           // next slot for a fresh value once master
	Val   [MaxSlots]uint8 // value proposed at each slot under this ballot, 0 none
}

// promise is a Promise message: acceptor A's answer to Prepare(B), with its
// entries for every slot from the ballot's From on (zero below).
type promise struct {
	A, B uint8
	Log  [MaxSlots]Entry
}

// State is one state of the model. Messages are never removed from the
// network: a Prepare(b) is outstanding from the moment b campaigns, an
// Accept(b, s, v) from the moment b proposes v at s, and Promise, Accepted
// and Commit messages are recorded in sets. Any of them may be received at any
// later time, any number of times, which covers loss, duplication, delay and
// reordering.
type State struct {
	nodes [MaxNodes]node
	props [MaxBallots]prop
	// votes has a bit per (acceptor, ballot, slot) the acceptor voted for:
	// the ground truth of Paxos. acks has a bit per Accepted message sent.
	votes, acks uint64
	// commits has a bit per Commit(ballot, c) message sent.
	commits uint32
	// promises is sorted by encoding and holds no duplicates.
	promises []promise
}

// value returns the value id that ballot b proposes fresh at slot s. Every
// (ballot, slot) proposes at most one value, so this names every value.
func (c *Config) value(b, s int) uint8 { return uint8((b-1)*c.Slots + s + 1) }

func (c *Config) valueName(v uint8) string {
	if v == 0 {
		return "-"
	}
	b := (int(v)-1)/c.Slots + 1
	s := (int(v) - 1) % c.Slots
	return fmt.Sprintf("v%d.%d", b, s)
}

func nodeName(i int) string { return string(rune('A' + i)) }

func (c *Config) ballotName(b uint8) string {
	if b == 0 {
		return "b0"
	}
	return fmt.Sprintf("b%d(%s)", b, nodeName(c.Owners[b-1]))
}

func (c *Config) voteBit(a, b, s int) uint64 {
	return 1 << uint((a*len(c.Owners)+b-1)*c.Slots+s)
}

func (c *Config) commitBit(b, commit int) uint32 {
	return 1 << uint((b-1)*(c.Slots+1)+commit)
}

// master returns the ballot node i is master at, or 0.
func (c *Config) master(st *State, i int) int {
	for b := 1; b <= len(c.Owners); b++ {
		if c.Owners[b-1] == i && st.props[b-1].Phase == phaseMaster {
			return b
		}
	}
	return 0
}

// active returns the ballot node i is preparing or master at, or 0.
func (c *Config) active(st *State, i int) int {
	for b := 1; b <= len(c.Owners); b++ {
		if c.Owners[b-1] == i {
			if p := st.props[b-1].Phase; p == phasePreparing || p == phaseMaster {
				return b
			}
		}
	}
	return 0
}

// encode appends a canonical encoding of st. Two states are equal exactly
// when their encodings are.
func (c *Config) encode(buf []byte, st *State) []byte {
	for i := 0; i < c.Nodes; i++ {
		n := &st.nodes[i]
		buf = append(buf, n.Promised, n.Commit)
		for s := 0; s < c.Slots; s++ {
			buf = appendEntry(buf, n.Log[s])
		}
	}
	for b := 0; b < len(c.Owners); b++ {
		p := &st.props[b]
		buf = append(buf, p.Phase, p.From, p.Next)
		buf = append(buf, p.Val[:c.Slots]...)
	}
	for k := 0; k < 8; k++ {
		buf = append(buf, byte(st.votes>>(8*k)), byte(st.acks>>(8*k)))
	}
	buf = append(buf, byte(st.commits), byte(st.commits>>8), byte(st.commits>>16), byte(st.commits>>24))
	for i := range st.promises {
		buf = c.appendPromise(buf, &st.promises[i])
	}
	return buf
}

func appendEntry(buf []byte, e Entry) []byte {
	ch := byte(0)
	if e.Chosen {
		ch = 1
	}
	return append(buf, e.B, e.V, ch)
}

func (c *Config) appendPromise(buf []byte, p *promise) []byte {
	buf = append(buf, p.A, p.B)
	for s := 0; s < c.Slots; s++ {
		buf = appendEntry(buf, p.Log[s])
	}
	return buf
}

func comparePromise(x, y *promise) int {
	if x.B != y.B {
		return int(x.B) - int(y.B)
	}
	if x.A != y.A {
		return int(x.A) - int(y.A)
	}
	for s := range x.Log {
		ex, ey := x.Log[s], y.Log[s]
		if ex != ey {
			if ex.B != ey.B {
				return int(ex.B) - int(ey.B)
			}
			if ex.V != ey.V {
				return int(ex.V) - int(ey.V)
			}
			if ex.Chosen {
				return 1
			}
			return -1
		}
	}
	return 0
}

// addPromise records a Promise message; the slice is copied, never changed
// in place, because states share it.
func (st *State) addPromise(p promise) {
	i, found := slices.BinarySearchFunc(st.promises, &p, func(x promise, y *promise) int { return comparePromise(&x, y) })
	if found {
		return
	}
	ps := make([]promise, 0, len(st.promises)+1)
	ps = append(ps, st.promises[:i]...)
	ps = append(ps, p)
	st.promises = append(ps, st.promises[i:]...)
}

// describe prints the state for a trace: every node's log and commit index,
// and every ballot's proposer.
func (c *Config) describe(st *State) string {
	var b strings.Builder
	for i := 0; i < c.Nodes; i++ {
		n := &st.nodes[i]
		fmt.Fprintf(&b, "%s[p=%d c=%d", nodeName(i), n.Promised, n.Commit)
		for s := 0; s < c.Slots; s++ {
			e := n.Log[s]
			mark := ""
			if e.Chosen {
				mark = "*"
			}
			fmt.Fprintf(&b, " %d:%s@b%d%s", s, c.valueName(e.V), e.B, mark)
		}
		b.WriteString("] ")
	}
	for p := 0; p < len(c.Owners); p++ {
		pr := &st.props[p]
		if pr.Phase == phaseIdle {
			continue
		}
		fmt.Fprintf(&b, "%s:%s", c.ballotName(uint8(p+1)), [...]string{"idle", "preparing", "master", "done"}[pr.Phase])
		for s := 0; s < c.Slots; s++ {
			if pr.Val[s] != 0 {
				fmt.Fprintf(&b, " %d=%s", s, c.valueName(pr.Val[s]))
			}
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}
