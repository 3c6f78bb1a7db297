package paxos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Membership changes (issue 11), after Lamport's reconfiguration of a state
// machine ("Reconfiguring a State Machine", Lamport, Malkhi, Zhou 2010) with
// a fixed delay alpha (ChangeDelay):
//
//   - A change is a value in the group's log (a Value holding one reserved
//     command, see NewChangeValue). A change chosen at slot j governs the
//     slots from j+alpha on: the configuration of slot s is the initial one
//     plus every change chosen at a slot at or below s-alpha, applied in
//     slot order. So config(s) is a function of the chosen log, the same on
//     every node, and it is known to anyone who knows the slots below
//     s-alpha+1.
//   - A proposer acts on slot s (counts promises for it, proposes in it,
//     counts accepts for it) only once it knows every slot below s-alpha+1
//     as chosen and applied in order: it then knows config(s) exactly, and
//     it counts only votes of config(s)'s voters, a majority of them. Every
//     quorum used for slot s, by any ballot, is then a majority of the one
//     configuration config(s), and single-slot Paxos is safe for slot s as it
//     is with a static configuration. No argument about overlapping
//     configurations is needed, which is why a stale master, one that is
//     outbid but does not know it yet, cannot go wrong either: it too knows
//     config(s) for every slot it proposes in.
//   - The price is that a master pipelines at most alpha slots beyond the
//     slots it has applied (the effective window is min(Window, alpha)), and
//     a change takes effect alpha slots after it is chosen: an idle master
//     fills those slots with no-ops, so a change completes in a few round
//     trips.
//   - Phase 1 is per slot too: a promise for ballot b from slot f on counts
//     for slot s >= f if its sender is a voter of config(s). A master whose
//     promises cover the slots governed by one configuration but not those
//     governed by the next (a voter was added) asks the new voters for
//     promises under the same ballot before it proposes there. Reusing the
//     ballot is safe: it has proposed nothing in those slots yet, and its
//     promise merge takes every reply it got.
//   - One change at a time: a master proposes a change only when no change
//     is in flight or waiting for its alpha slots, and only single-node
//     changes exist (add a learner, promote a learner to voter, remove a
//     node). Safety does not rest on this (any configuration sequence would
//     be safe, see above), but availability and an operator's reasoning do:
//     each step keeps a majority of the old voters in the new set.
//   - Learners (non-voters) get Accepts and heartbeats like any member and
//     answer them, but their votes never count. A learner is promoted only
//     once its commit index is within MaxFetchEntries of the master's, so a
//     new voter does not slow the quorum down by catching up on the spot.
//   - A node that is not a voter of the configuration it knows in force
//     never campaigns, and an acceptor refuses (Nack, Behind) a Prepare
//     from a node that its configuration in force no longer lists as a
//     voter, so that a removed node, which stops hearing heartbeats,
//     fetches and learns its removal instead of disrupting the group.
//   - Snapshots carry the group's Membership at their slot (the epochs that
//     still matter), and a node that installs one or restarts from one
//     starts from it (Config.SnapshotMembership, InstallSnapshot).

// ChangeDelay is alpha: a change chosen at slot j governs the slots from
// j+ChangeDelay on. It is part of the protocol: every node of a cluster must
// use the same value, so it is a constant, not a setting.
const ChangeDelay = 256

// Member is one node of a group's configuration.
type Member struct {
	ID NodeID
	// Addr is where peers reach the node; the core only carries it.
	Addr string
	// Voter is false for a learner, whose votes never count.
	Voter bool
}

// Epoch is a configuration and the first slot it governs.
type Epoch struct {
	From    uint64
	Members []Member // in ID order
}

// Membership is the part of a group's configuration history that still
// matters from some slot on: Epochs in ascending From order, the first of
// which governs that slot. It is part of every snapshot.
type Membership struct {
	Epochs []Epoch
}

// ChangeOp is the kind of a membership change.
type ChangeOp uint8

// Membership change kinds, each about one node.
const (
	// AddLearner adds a node that receives the log but does not vote.
	AddLearner ChangeOp = iota + 1
	// Promote makes a learner a voter.
	Promote
	// Remove takes a node (voter or learner) out of the group.
	Remove
)

func (op ChangeOp) String() string {
	switch op {
	case AddLearner:
		return "add-learner"
	case Promote:
		return "promote"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("ChangeOp(%d)", uint8(op))
}

// Change is one membership change.
type Change struct {
	Op   ChangeOp
	Node NodeID
	Addr string // for AddLearner
}

func (c Change) String() string {
	if c.Addr != "" {
		return fmt.Sprintf("%s %d at %s", c.Op, c.Node, c.Addr)
	}
	return fmt.Sprintf("%s %d", c.Op, c.Node)
}

// ChangeClient is the reserved client id of the command that carries a
// membership change. Propose refuses commands with this id, so no client can
// forge a change; values holding it are changes (see ChangeOf).
const ChangeClient = 0

// change command data: "MCHG", version=1, op, node, address length, address.
const (
	changeMagic   = "MCHG"
	changeVersion = 1
	maxAddrBytes  = 255
)

// Errors of ProposeChange.
var (
	// ErrChangePending: another change is in flight or not yet in force;
	// retry once it is.
	ErrChangePending = errors.New("paxos: a membership change is already in progress in this group")
	// ErrBadChange: the change does not apply to the group's membership.
	ErrBadChange = errors.New("paxos: membership change does not apply")
	// ErrNotCaughtUp: the learner to promote is too far behind the master.
	ErrNotCaughtUp = errors.New("paxos: the learner has not caught up yet")
)

// changeCommand returns the command that carries c, with sequence seq.
func changeCommand(c Change, seq uint64) Command {
	b := make([]byte, 0, len(changeMagic)+16+len(c.Addr))
	b = append(b, changeMagic...)
	b = append(b, changeVersion, byte(c.Op))
	b = binary.AppendUvarint(b, uint64(c.Node))
	b = binary.AppendUvarint(b, uint64(len(c.Addr)))
	b = append(b, c.Addr...)
	return Command{ID: CommandID{Client: ChangeClient, Seq: seq}, Data: b}
}

// decodeChange decodes a change command's data; it never panics.
func decodeChange(b []byte) (Change, error) {
	var c Change
	if len(b) < len(changeMagic)+2 || string(b[:len(changeMagic)]) != changeMagic {
		return c, fmt.Errorf("%w: not a membership change", ErrCorrupt)
	}
	if b[len(changeMagic)] != changeVersion {
		return c, fmt.Errorf("%w: %w: membership change version %d (this build reads %d)", ErrCorrupt, ErrUnknownVersion, b[len(changeMagic)], changeVersion)
	}
	c.Op = ChangeOp(b[len(changeMagic)+1])
	if c.Op < AddLearner || c.Op > Remove {
		return c, fmt.Errorf("%w: unknown membership change kind %d", ErrCorrupt, c.Op)
	}
	d := decoder{b: b, off: len(changeMagic) + 2, what: "membership change", entry: -1, cmd: -1}
	c.Node = NodeID(d.u32("node"))
	l := d.uvarint("address length")
	if d.err == nil && (l > maxAddrBytes || l > uint64(len(b)-d.off)) {
		d.failf("address of %d bytes (at most %d, %d left)", l, maxAddrBytes, len(b)-d.off)
	}
	if d.err == nil {
		c.Addr = string(b[d.off : d.off+int(l)])
		d.off += int(l)
	}
	if !d.finish() {
		return Change{}, d.err
	}
	if c.Node == 0 {
		return Change{}, fmt.Errorf("%w: membership change of node 0", ErrCorrupt)
	}
	return c, nil
}

// ChangeOf reports whether v is a membership change, and which. A change
// value holds exactly one command, from ChangeClient.
func ChangeOf(v *Value) (Change, bool) {
	if len(v.Cmds) != 1 || v.Cmds[0].ID.Client != ChangeClient {
		return Change{}, false
	}
	c, err := decodeChange(v.Cmds[0].Data)
	return c, err == nil
}

// InitialMembership is the membership of a group that never changed: every
// node of nodes a voter from slot 0 on.
func InitialMembership(nodes []NodeID) Membership {
	ms := make([]Member, 0, len(nodes))
	for _, id := range nodes {
		ms = append(ms, Member{ID: id, Voter: true})
	}
	slices.SortFunc(ms, func(a, b Member) int { return int(a.ID) - int(b.ID) })
	return Membership{Epochs: []Epoch{{From: 0, Members: ms}}}
}

// Clone returns a deep copy.
func (m Membership) Clone() Membership {
	out := Membership{Epochs: make([]Epoch, len(m.Epochs))}
	for i, e := range m.Epochs {
		out.Epochs[i] = Epoch{From: e.From, Members: slices.Clone(e.Members)}
	}
	return out
}

// At returns the members governing slot s, as far as m knows (the last epoch
// with From <= s).
func (m Membership) At(s uint64) []Member {
	var out []Member
	for _, e := range m.Epochs {
		if e.From > s {
			break
		}
		out = e.Members
	}
	return out
}

// Latest returns the members after every change m holds.
func (m Membership) Latest() []Member {
	if len(m.Epochs) == 0 {
		return nil
	}
	return m.Epochs[len(m.Epochs)-1].Members
}

// Voters returns the ids of the voters of ms.
func Voters(ms []Member) []NodeID {
	var out []NodeID
	for _, x := range ms {
		if x.Voter {
			out = append(out, x.ID)
		}
	}
	return out
}

func memberIndex(ms []Member, id NodeID) int {
	for i, x := range ms {
		if x.ID == id {
			return i
		}
	}
	return -1
}

func isVoter(ms []Member, id NodeID) bool {
	i := memberIndex(ms, id)
	return i >= 0 && ms[i].Voter
}

// applyChange returns ms with c applied, or an error that says why it does
// not apply (the members are then unchanged).
func applyChange(ms []Member, c Change) ([]Member, error) {
	i := memberIndex(ms, c.Node)
	switch c.Op {
	case AddLearner:
		if i >= 0 {
			return ms, fmt.Errorf("%w: node %d is a member already", ErrBadChange, c.Node)
		}
		out := append(slices.Clone(ms), Member{ID: c.Node, Addr: c.Addr})
		slices.SortFunc(out, func(a, b Member) int { return int(a.ID) - int(b.ID) })
		return out, nil
	case Promote:
		if i < 0 || ms[i].Voter {
			return ms, fmt.Errorf("%w: node %d is not a learner", ErrBadChange, c.Node)
		}
		out := slices.Clone(ms)
		out[i].Voter = true
		return out, nil
	case Remove:
		if i < 0 {
			return ms, fmt.Errorf("%w: node %d is not a member", ErrBadChange, c.Node)
		}
		if ms[i].Voter && len(Voters(ms)) == 1 {
			return ms, fmt.Errorf("%w: node %d is the last voter", ErrBadChange, c.Node)
		}
		return slices.Delete(slices.Clone(ms), i, i+1), nil
	}
	return ms, fmt.Errorf("%w: unknown change kind %d", ErrBadChange, c.Op)
}

// apply takes in the value chosen at slot: a change that applies opens an
// epoch from slot+delay on; one that does not apply changes nothing (every
// node sees the same log, so every node skips it alike).
func (m *Membership) apply(slot uint64, v *Value, delay uint64) {
	c, ok := ChangeOf(v)
	if !ok {
		return
	}
	next, err := applyChange(m.Latest(), c)
	if err != nil {
		return
	}
	m.Epochs = append(m.Epochs, Epoch{From: slot + delay, Members: next})
}

// Apply takes in the value chosen at slot, as the core does: runtimes that
// keep the membership for their snapshots call it for every applied slot, in
// order, and Prune after.
func (m *Membership) Apply(slot uint64, v *Value) { m.apply(slot, v, ChangeDelay) }

// Prune drops the epochs that no slot at or above s is governed by.
func (m *Membership) Prune(s uint64) {
	i := 0
	for i+1 < len(m.Epochs) && m.Epochs[i+1].From <= s {
		i++
	}
	if i > 0 {
		m.Epochs = slices.Delete(m.Epochs, 0, i)
	}
}

func (m Membership) String() string {
	var b strings.Builder
	for i, e := range m.Epochs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "from %d:", e.From)
		for _, x := range e.Members {
			if x.Voter {
				fmt.Fprintf(&b, " %d", x.ID)
			} else {
				fmt.Fprintf(&b, " (%d)", x.ID)
			}
		}
	}
	return b.String()
}

// Membership encoding: "MEMB", version=1, epoch count, then per epoch: from,
// member count, then per member: id, flags (bit 0: voter), address length,
// address. Integers are varints in their shortest form.
const (
	membershipMagic   = "MEMB"
	membershipVersion = 1
	maxEpochs         = 64
	maxMembers        = 64
)

// AppendMembership appends the encoding of m to dst.
func AppendMembership(dst []byte, m *Membership) []byte {
	dst = append(dst, membershipMagic...)
	dst = append(dst, membershipVersion)
	dst = binary.AppendUvarint(dst, uint64(len(m.Epochs)))
	for _, e := range m.Epochs {
		dst = binary.AppendUvarint(dst, e.From)
		dst = binary.AppendUvarint(dst, uint64(len(e.Members)))
		for _, x := range e.Members {
			dst = binary.AppendUvarint(dst, uint64(x.ID))
			var f byte
			if x.Voter {
				f = 1
			}
			dst = append(dst, f)
			dst = binary.AppendUvarint(dst, uint64(len(x.Addr)))
			dst = append(dst, x.Addr...)
		}
	}
	return dst
}

// DecodeMembership decodes what AppendMembership wrote; b must hold exactly
// that. It refuses, with an error wrapping ErrCorrupt, anything truncated,
// non-canonical, out of order or beyond its bounds (64 epochs of 64 members,
// addresses of 255 bytes), and never panics.
func DecodeMembership(b []byte) (Membership, error) {
	d := decoder{b: b, what: "membership", entry: -1, cmd: -1}
	var m Membership
	switch {
	case len(b) < len(membershipMagic)+1 || string(b[:len(membershipMagic)]) != membershipMagic:
		d.failf("does not start with %q", membershipMagic)
	case b[len(membershipMagic)] != membershipVersion:
		d.failf("unknown format version %d (this build reads version %d; was it written by a newer lockd?)", b[len(membershipMagic)], membershipVersion)
		d.err.(*decodeError).version = true
	}
	if d.err != nil {
		return m, d.err
	}
	d.off = len(membershipMagic) + 1
	n := d.count("number of epochs", "epochs", maxEpochs, "64 epochs", 2)
	if d.err != nil {
		return m, d.err
	}
	if n == 0 {
		d.failf("no epoch")
		return m, d.err
	}
	m.Epochs = make([]Epoch, n)
	for i := range m.Epochs {
		e := &m.Epochs[i]
		e.From = d.uvarint("epoch start")
		if d.err == nil && i > 0 && e.From <= m.Epochs[i-1].From {
			d.failf("epoch %d starts at slot %d, not after the one before (%d)", i, e.From, m.Epochs[i-1].From)
		}
		k := d.count("number of members", "members", maxMembers, "64 members", 3)
		if d.err != nil {
			return Membership{}, d.err
		}
		e.Members = make([]Member, k)
		voters := 0
		for j := range e.Members {
			x := &e.Members[j]
			x.ID = NodeID(d.u32("member id"))
			f := d.byte("member flags")
			l := d.uvarint("address length")
			if d.err != nil {
				return Membership{}, d.err
			}
			switch {
			case x.ID == 0:
				d.failf("member id 0")
			case j > 0 && x.ID <= e.Members[j-1].ID:
				d.failf("member %d after member %d: not in id order", x.ID, e.Members[j-1].ID)
			case f&^1 != 0:
				d.failf("unknown member flags %#x", f)
			case l > maxAddrBytes || l > uint64(len(b)-d.off):
				d.failf("address of %d bytes (at most %d, %d left)", l, maxAddrBytes, len(b)-d.off)
			}
			if d.err != nil {
				return Membership{}, d.err
			}
			x.Voter = f == 1
			if x.Voter {
				voters++
			}
			x.Addr = string(b[d.off : d.off+int(l)])
			d.off += int(l)
		}
		if d.err == nil && voters == 0 {
			d.failf("epoch %d has no voter", i)
		}
	}
	if !d.finish() {
		return Membership{}, d.err
	}
	return m, nil
}

// ProposeChange asks the master of group g to propose change c. It returns
// at once: nil when the change is queued (it is in force once Membership
// shows an epoch holding it whose From is at or below the commit index), a
// *NotMasterError, ErrChangePending while another change is in flight or
// not yet in force, ErrBadChange when c does not apply to the newest
// membership, or ErrNotCaughtUp for a learner to promote that is more than
// MaxFetchEntries slots behind the master.
func (n *Node) ProposeChange(g GroupID, c Change) error {
	gr, err := n.group(g)
	if err != nil {
		return err
	}
	if gr.role != master {
		return &NotMasterError{Group: g, Hint: gr.leader}
	}
	if c.Node == 0 || len(c.Addr) > maxAddrBytes {
		return fmt.Errorf("%w: node 0 or an address above %d bytes", ErrBadChange, maxAddrBytes)
	}
	if gr.changePending() {
		return fmt.Errorf("%w (group %d: %s)", ErrChangePending, g, gr.ms)
	}
	if _, err := applyChange(gr.ms.Latest(), c); err != nil {
		return fmt.Errorf("group %d: %s: %w", g, c, err)
	}
	if c.Op == Promote && c.Node != n.cfg.ID && gr.progress[c.Node]+uint64(n.cfg.MaxFetchEntries) < gr.commit {
		return fmt.Errorf("%w: group %d: node %d is at slot %d, the master at %d; promote it once it is within %d slots",
			ErrNotCaughtUp, g, c.Node, gr.progress[c.Node], gr.commit, n.cfg.MaxFetchEntries)
	}
	gr.valueSeq++
	v := Value{ID: ValueID{Ballot: gr.ballot, N: gr.valueSeq}, Cmds: []Command{changeCommand(c, gr.valueSeq)}}
	gr.changeQ = &v
	gr.touch()
	return nil
}

// changePending reports whether a change is queued, in flight, chosen but
// not yet taken in, or taken in but not yet in force.
func (g *group) changePending() bool {
	if g.changeQ != nil || g.ms.Epochs[len(g.ms.Epochs)-1].From > g.commit {
		return true
	}
	for s := g.applied; s < max(g.next, g.last); s++ {
		if e, ok := g.log[s]; ok {
			if _, isChange := ChangeOf(&e.Value); isChange {
				return true
			}
		}
	}
	for _, p := range g.inflight {
		if _, isChange := ChangeOf(&p.value); isChange {
			return true
		}
	}
	return false
}

// Membership returns group g's membership as of the slots handed out to
// apply, with the epochs still to come into force.
func (n *Node) Membership(g GroupID) (Membership, error) {
	gr, err := n.group(g)
	if err != nil {
		return Membership{}, err
	}
	return gr.ms.Clone(), nil
}

// Progress returns, for group g, the highest commit index this node heard
// from each node: on the master, how far each learner has caught up.
func (n *Node) Progress(g GroupID) (map[NodeID]uint64, error) {
	gr, err := n.group(g)
	if err != nil {
		return nil, err
	}
	out := make(map[NodeID]uint64, len(gr.progress))
	for id, c := range gr.progress {
		out[id] = c
	}
	out[n.cfg.ID] = gr.commit
	return out, nil
}

// noteMember sets g.member once this node appears in the membership.
func (g *group) noteMember() {
	for _, e := range g.ms.Epochs {
		if memberIndex(e.Members, g.n.cfg.ID) >= 0 {
			g.member = true
			return
		}
	}
}
