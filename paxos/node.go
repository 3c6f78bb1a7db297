package paxos

import (
	"fmt"
	"slices"
)

// Storage is the durable state the core reads: at start, and for chosen
// entries it no longer keeps in memory. The runtime writes it from
// Ready.Persist; the core never writes.
type Storage interface {
	// HardState returns group g's durable hard state (zero if none).
	HardState(g GroupID) (HardState, error)
	// Entries returns g's stored entries with from <= slot < to, in slot
	// order, at most max of them.
	Entries(g GroupID, from, to uint64, max int) ([]Entry, error)
}

// GroupWrite is what one group needs written, atomically with the writes of
// every other group of the same Ready.
type GroupWrite struct {
	Group GroupID
	// Hard is the new hard state, or nil when it did not change.
	Hard *HardState
	// Entries are log entries to write (each replaces the slot's entry).
	Entries []Entry
}

// Apply is a chosen slot handed to the state machine. Slots of one group come
// strictly in order, each exactly once per Node lifetime.
type Apply struct {
	Group GroupID
	Slot  uint64
	Value Value
}

// Dropped is a command this node no longer drives: it was queued or in flight
// when the node stopped being master, or its slot chose another value. A
// command that was in flight may still be chosen through a new master, so the
// caller retries it with the same id where Err says (a NotMasterError carries
// a hint); a duplicate id is answered with its first outcome.
type Dropped struct {
	Group GroupID
	ID    CommandID
	Err   error
}

// Ready is one batch of work for the runtime. The order matters:
//
//  1. Messages may be sent at once.
//  2. Persist must be written atomically and durably (one synced batch).
//  3. Only then may AfterSync be sent. Messages in it addressed to this node
//     are given back to Step (after Advance).
//  4. Committed is applied in order and Dropped is reported, at any point
//     after Ready returns: every committed slot is chosen, that is durably
//     accepted by a majority, so it needs nothing from this Ready's write.
//  5. Advance, once all of the above is done (possibly after later Readys).
type Ready struct {
	Messages []Message
	Persist  []GroupWrite
	// MustSync says whether Persist must be synced before AfterSync leaves.
	// When it is false, Persist only moves commit indexes forward, which a
	// crash may lose without harm: it may be written without a sync, and
	// it becomes durable with the next synced write.
	MustSync bool
	// Urgent says that Persist holds the accept of an urgent slot
	// (Message.Urgent): the runtime should sync it without waiting for
	// other groups' writes to share the sync.
	Urgent bool
	// Contended says that Persist holds the accept of a contended slot
	// (Message.Contended): a light client's command on a node busy with
	// other clients' commands. The runtime should keep its disk free for
	// such writes for a while, by holding its other synced writes back.
	Contended bool
	AfterSync []Message
	Committed []Apply
	Dropped   []Dropped
	// Snapshots asks for snapshots: the node is behind the log its peers
	// keep (see snapshot.go). The runtime fetches one (one transfer per
	// group at a time), then calls InstallSnapshot.
	Snapshots []SnapshotNeed
	// StorageErrors lists reads of durable state that failed. The core treats
	// them as missing entries; the runtime should log them and may stop.
	StorageErrors []error
}

// Empty reports whether the Ready carries nothing.
func (r *Ready) Empty() bool {
	return len(r.Messages) == 0 && len(r.Persist) == 0 && len(r.AfterSync) == 0 &&
		len(r.Committed) == 0 && len(r.Dropped) == 0 && len(r.StorageErrors) == 0 && len(r.Snapshots) == 0
}

// Node is the pure Paxos core of one node for all its groups. It is not safe
// for concurrent use: one goroutine (the runtime) owns it.
type Node struct {
	cfg     Config
	storage Storage
	groups  []*group

	// Output collected since the last Ready.
	dirty   []*group
	msgs    []Message
	after   []Message
	dropped []Dropped
	urgent  bool // an urgent slot was accepted since the last Ready
	// contended: a contended slot was accepted since the last Ready
	contended bool
	errs      []error
	snaps     []SnapshotNeed

	// maxApplyPerReady bounds Ready.Committed per group, so that replaying a
	// long log after a restart does not build one giant batch.
	maxApplyPerReady int
	// keepInMemory is how many applied slots stay in memory for peers that
	// fetch them soon.
	keepInMemory uint64
	// quorumHook, set by the simulator only, sees every quorum the core
	// counts: phase 1 (the promisers that cover the slot, when the master
	// proposes in it) and phase 2 (the acceptors, when it marks the slot
	// chosen).
	quorumHook func(g GroupID, slot uint64, phase int, b Ballot, voters []NodeID)
}

// New builds the core from durable state. A node that restarts gets back its
// promises, accepted entries and commit index, and replays chosen slots from
// the start through Ready.Committed.
func New(cfg Config, st Storage) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, storage: st, maxApplyPerReady: 1024, keepInMemory: 1024}
	n.groups = make([]*group, cfg.Groups)
	for i := range n.groups {
		g := newGroup(n, GroupID(i))
		hs, err := st.HardState(g.id)
		if err != nil {
			return nil, fmt.Errorf("paxos: load hard state of group %d: %w", i, err)
		}
		g.promised, g.commit = hs.Promised, hs.Commit
		g.seeRound(hs.Promised)
		if ss, ok := st.(SnapshotStorage); ok {
			snap, err := ss.SnapshotSlot(g.id)
			if err != nil {
				return nil, fmt.Errorf("paxos: load snapshot slot of group %d: %w", i, err)
			}
			// The state machines start from the snapshot (the runtime
			// restored it), so the slots below it are applied. A crash
			// between writing an installed snapshot and its commit index
			// leaves the commit index below it: the snapshot vouches for
			// those slots.
			g.snap, g.applied, g.untrusted = snap, snap, snap
			g.commit = max(g.commit, snap)
			if snap > 0 && cfg.SnapshotMembership != nil {
				ms, err := cfg.SnapshotMembership(g.id)
				if err != nil {
					return nil, fmt.Errorf("paxos: load the membership of group %d's snapshot at slot %d: %w", i, snap, err)
				}
				if err := g.setMembership(ms, snap); err != nil {
					return nil, err
				}
			}
		}
		g.memFloor = 0
		// Entries from the commit index on are the unsettled tail; chosen
		// entries below it stay in storage and are replayed from there.
		for from := g.commit; ; {
			es, err := st.Entries(g.id, from, ^uint64(0), 1024)
			if err != nil {
				return nil, fmt.Errorf("paxos: load log of group %d from slot %d: %w", i, from, err)
			}
			for j := range es {
				e := es[j]
				g.log[e.Slot] = &e
				g.last = e.Slot + 1
				g.seeRound(e.Ballot)
			}
			if len(es) < 1024 {
				break
			}
			from = es[len(es)-1].Slot + 1
		}
		g.memFloor = g.commit
		g.last = max(g.last, g.commit)
		g.noteMember()
		g.knownCommit = g.commit
		if g.commit > g.applied {
			g.touch()
		}
		n.groups[i] = g
	}
	return n, nil
}

func (n *Node) group(id GroupID) (*group, error) {
	if int(id) >= len(n.groups) {
		return nil, fmt.Errorf("%w %d: this node has groups 0 to %d", ErrUnknownGroup, id, len(n.groups)-1)
	}
	return n.groups[id], nil
}

// Propose queues cmd in group g. It returns at once: nil when the command is
// queued (its outcome comes through Ready.Committed or Ready.Dropped), a
// *NotMasterError when another node should be asked, or ErrOverloaded.
func (n *Node) Propose(g GroupID, cmd Command) error {
	return n.propose(g, cmd, 0)
}

// ProposeAhead is Propose for a command that should not wait behind the
// group's queue: on a master it goes ahead of every command queued with
// Propose, and it opens a slot of its own at once when the window has room,
// instead of waiting for the slot in flight to be chosen (batchReady). The
// runtime uses it for the commands of a client that has little in flight
// while others flood the group, so that such a command waits for at most
// the rounds already in flight, not for the flood's queue. It changes only
// which commands go into which new slot and when; every slot is proposed
// and chosen by the same rules as any other.
func (n *Node) ProposeAhead(g GroupID, cmd Command) error {
	return n.propose(g, cmd, markUrgent)
}

// ProposeContended is ProposeAhead for a light client's command on a node
// that is busy with other clients' commands: its slot's Accepts carry
// Message.Contended as well as Message.Urgent, so that every node writing
// it holds its other synced writes back for a while (Ready.Contended).
// Like ProposeAhead, it changes nothing in what is proposed or chosen.
func (n *Node) ProposeContended(g GroupID, cmd Command) error {
	return n.propose(g, cmd, markUrgent|markContended)
}

// propose queues cmd; a command with a mark goes ahead (ProposeAhead).
func (n *Node) propose(g GroupID, cmd Command, mark slotMark) error {
	ahead := mark != 0
	gr, err := n.group(g)
	if err != nil {
		return err
	}
	if cmd.ID.Client == ChangeClient {
		return fmt.Errorf("paxos: command %v: client id %d is reserved for membership changes", cmd.ID, ChangeClient)
	}
	if gr.role != master && (n.cfg.Contend || gr.leader == 0) && !isVoter(gr.ms.At(gr.commit), n.cfg.ID) {
		// Not a voter (a learner, or removed): it cannot become master.
		return &NotMasterError{Group: g, Hint: gr.leader}
	}
	if gr.role != master && !n.cfg.Contend {
		if !n.cfg.AutoCampaign || gr.leader != 0 {
			return &NotMasterError{Group: g, Hint: gr.leader}
		}
		if gr.role == follower {
			gr.campaign()
		}
	}
	if cmd.size() > n.cfg.MaxBatchBytes {
		return fmt.Errorf("%w: command %v is %d bytes, a slot holds at most %d (MaxBatchBytes)", ErrTooLarge, cmd.ID, cmd.size(), n.cfg.MaxBatchBytes)
	}
	if gr.pendingBytes+cmd.size() > n.cfg.MaxPendingBytes {
		return fmt.Errorf("%w (group %d has %d bytes queued)", ErrOverloaded, g, gr.pendingBytes)
	}
	if ahead && gr.role == master {
		gr.ahead = append(gr.ahead, cmd)
		gr.aheadMark |= mark
	} else {
		gr.pending = append(gr.pending, cmd)
	}
	gr.pendingBytes += cmd.size()
	gr.touch()
	return nil
}

// Campaign starts phase 1 for group g now, whatever the failure detector says.
func (n *Node) Campaign(g GroupID) error {
	gr, err := n.group(g)
	if err != nil {
		return err
	}
	gr.campaign()
	return nil
}

// Step takes in a message from a peer (or from this node, out of AfterSync).
// A message for an unknown group or of an unknown kind is an error; the
// message is ignored.
func (n *Node) Step(m Message) error {
	g, err := n.group(m.Group)
	if err != nil {
		return err
	}
	// Messages from any node are taken: only the votes of the voters of a
	// slot's configuration are ever counted (membership.go), and a node
	// that is not a member yet, or no longer, may still fetch and learn.
	if m.From == 0 {
		return fmt.Errorf("paxos: %s without a sender reached node %d", m.Type, n.cfg.ID)
	}
	if m.To != n.cfg.ID {
		return fmt.Errorf("paxos: message for node %d reached node %d", m.To, n.cfg.ID)
	}
	if m.Commit > g.progress[m.From] {
		g.progress[m.From] = m.Commit
	}
	switch m.Type {
	case MsgPrepare:
		g.onPrepare(&m)
	case MsgPromise:
		g.onPromise(&m)
	case MsgAccept:
		g.onAccept(&m)
	case MsgAccepted:
		g.onAccepted(&m)
		g.learnCommit(m.From, Ballot{}, m.Commit, false)
	case MsgNack:
		g.onNack(&m)
	case MsgCommit:
		if !m.Ballot.Less(g.promised) {
			g.observeBallot(m.From, m.Ballot)
			g.heardFromMaster(m.From)
		}
		g.learnCommit(m.From, m.Ballot, m.Commit, true)
	case MsgFetch:
		g.onFetch(&m)
	case MsgFetchReply:
		g.onFetchReply(&m)
	default:
		return fmt.Errorf("paxos: unknown message type %d from node %d", m.Type, m.From)
	}
	g.maybeFetch()
	return nil
}

// Tick advances every group's logical clock by one tick.
func (n *Node) Tick() {
	for _, g := range n.groups {
		g.tick()
	}
}

// HasReady reports whether Ready would return anything.
func (n *Node) HasReady() bool {
	return len(n.dirty) > 0 || len(n.msgs) > 0 || len(n.after) > 0 || len(n.dropped) > 0 || len(n.snaps) > 0
}

// Ready collects the work of every group that changed since the last call.
// The caller must finish it (see Ready) and call Advance for it, in order;
// it may take the next Ready before that.
func (n *Node) Ready() Ready {
	var r Ready
	var again []*group
	groups := n.dirty
	n.dirty = nil
	for _, g := range groups {
		g.touched = false
		g.fill()
		if g.hardDirty || len(g.unsaved) > 0 {
			r.MustSync = r.MustSync || g.mustSync
			g.mustSync = false
			w := GroupWrite{Group: g.id}
			if g.hardDirty {
				w.Hard = &HardState{Promised: g.promised, Commit: g.commit}
				g.hardDirty = false
			}
			slots := make([]uint64, 0, len(g.unsaved))
			for s := range g.unsaved {
				slots = append(slots, s)
			}
			slices.Sort(slots)
			for _, s := range slots {
				if e, ok := g.log[s]; ok {
					w.Entries = append(w.Entries, *e)
				}
			}
			clear(g.unsaved)
			r.Persist = append(r.Persist, w)
		}
		// Hand out chosen slots in order, a bounded number at a time.
		first := len(r.Committed)
		s := g.applied
		for s < g.commit && s-g.applied < uint64(n.maxApplyPerReady) {
			if s < g.memFloor {
				es := g.entries(s, min(g.commit, g.memFloor, g.applied+uint64(n.maxApplyPerReady)), n.maxApplyPerReady)
				if len(es) == 0 {
					break
				}
				for _, e := range es {
					r.Committed = append(r.Committed, Apply{Group: g.id, Slot: e.Slot, Value: e.Value})
				}
				s = es[len(es)-1].Slot + 1
				continue
			}
			r.Committed = append(r.Committed, Apply{Group: g.id, Slot: s, Value: g.log[s].Value})
			s++
		}
		epochs := len(g.ms.Epochs)
		for _, a := range r.Committed[first:] {
			g.ms.apply(a.Slot, &a.Value, n.cfg.delay())
		}
		g.noteMember()
		g.applied = s // handed out: the runtime applies them
		g.ms.Prune(g.applied)
		if len(g.ms.Epochs) != epochs || (g.role == master && len(r.Committed) > first) {
			// Slots handed out widen the slots whose configuration the
			// master knows (membership.go): it may propose further, or a
			// new epoch may end its term.
			again = append(again, g)
		}
		if g.applied < g.commit {
			again = append(again, g) // more to do next time
		}
	}
	for _, g := range again {
		g.touch()
	}
	r.Urgent, n.urgent = n.urgent && len(r.Persist) > 0, false
	r.Contended, n.contended = n.contended && len(r.Persist) > 0, false
	r.Messages, n.msgs = n.msgs, nil
	r.AfterSync, n.after = n.after, nil
	r.Dropped, n.dropped = n.dropped, nil
	r.StorageErrors, n.errs = n.errs, nil
	r.Snapshots, n.snaps = n.snaps, nil
	return r
}

// Advance tells the core that r's Persist is durable and its Committed is
// applied. A runtime that persists in the background may call it after
// later Readys, but must call it for every Ready, in order. Entries applied
// in r leave memory beyond a margin: they are durable now, so reading them
// back from storage (to answer a Fetch or a Prepare) is safe.
func (n *Node) Advance(r Ready) {
	for _, a := range r.Committed {
		if g := n.groups[a.Group]; a.Slot+1 > g.durable {
			g.durable = a.Slot + 1
		}
		if a.Slot+1 <= n.keepInMemory {
			continue
		}
		g := n.groups[a.Group]
		floor := a.Slot + 1 - n.keepInMemory
		for s := g.memFloor; s < floor; s++ {
			delete(g.log, s)
		}
		if floor > g.memFloor {
			g.memFloor = floor
		}
	}
}

func (n *Node) badMessage(m *Message, why string) {
	n.errs = append(n.errs, fmt.Errorf("paxos: dropped %s from node %d: %s", m.Type, m.From, why))
}

func (n *Node) storageErr(g GroupID, slot uint64, err error) {
	if err == nil {
		err = fmt.Errorf("no entry")
	}
	n.errs = append(n.errs, fmt.Errorf("paxos: read group %d slot %d: %w", g, slot, err))
}

// GroupStatus describes one group as this node sees it.
type GroupStatus struct {
	Group   GroupID
	Role    string
	Ballot  Ballot // our ballot when preparing or master
	Master  NodeID // believed master, 0 if none known
	Promise Ballot
	Commit  uint64
	Applied uint64
	// Next is the next slot a master fills; InFlight counts its slots that
	// are proposed and not yet known as chosen.
	Next     uint64
	InFlight int
	Pending  int
	// Voter says whether this node votes in the configuration of its
	// commit index; Removed, that it was a member and the newest
	// configuration it knows leaves it out and is in force (the group no
	// longer needs it). A node waiting to join is not Removed. A node that
	// restarts from a snapshot taken after its removal no longer knows it
	// was a member: the runtime keeps that fact if it needs it.
	Voter   bool
	Removed bool
}

// Status returns the status of group g.
func (n *Node) Status(g GroupID) (GroupStatus, error) {
	gr, err := n.group(g)
	if err != nil {
		return GroupStatus{}, err
	}
	latest := gr.ms.Epochs[len(gr.ms.Epochs)-1]
	return GroupStatus{Group: g, Role: gr.role.String(), Ballot: gr.ballot, Master: gr.leader, Promise: gr.promised,
		Commit: gr.commit, Applied: gr.applied, Next: gr.next, InFlight: len(gr.inflight), Pending: len(gr.ahead) + len(gr.pending),
		Voter:   isVoter(gr.ms.At(gr.commit), n.cfg.ID),
		Removed: gr.member && memberIndex(latest.Members, n.cfg.ID) < 0 && gr.applied >= latest.From}, nil
}

// Groups returns the number of groups.
func (n *Node) Groups() int { return len(n.groups) }
