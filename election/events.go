package election

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Cause says why a group's master changed.
type Cause uint8

// Causes of an Event.
const (
	// CauseNone marks the state of a group that has had no master yet.
	CauseNone Cause = iota
	// CauseLease: a lease of a new master was applied.
	CauseLease
	// CauseReleased: the master released the group (Event.To names the node
	// it was handed to).
	CauseReleased
	// CauseExpired: the master's lease ran out without renewal.
	CauseExpired
	// CauseRenewed: the master's lease was renewed after this node had
	// counted it out (and announced CauseExpired): the same master again.
	CauseRenewed
)

// String names the cause.
func (c Cause) String() string {
	switch c {
	case CauseLease:
		return "lease"
	case CauseReleased:
		return "released"
	case CauseExpired:
		return "expired"
	case CauseRenewed:
		return "renewed"
	}
	return "none"
}

// Event is a change of a group's master.
//
// Epoch orders the events of a group and is derived from the log, so that
// events of different nodes compare: a lease or release chosen at slot s
// gives epoch 4(s+1) or 4(s+1)+1, and the expiry of the lease chosen at s
// gives 4(s+1)+2. Epoch 0 is the state before any lease.
//
// Seq numbers the master changes of the group's log: a lease of another
// holder than the last, or a release, adds one. It is derived from the log
// alone, so it is the same on every node, and it grows by exactly one from
// one change to the next: a reader that sees it grow by more missed a change.
// Every node announces every change. Between two changes, a node may also
// announce, with the Seq of the change before, that the master's lease ran
// out by its own count (CauseExpired, Master 0) and, rarely, that it was
// renewed after all (CauseRenewed). Those depend on the node's clock; but
// when a lease of another holder follows in the log, every node that has not
// announced the expiry yet announces it just before, so the step from one
// master to another always passes through "no master", on every node.
type Event struct {
	Group paxos.GroupID
	Epoch uint64
	// Seq is the number of master changes in the group's log up to this
	// event (see above).
	Seq uint64
	// Master is the new master, zero for "no master".
	Master paxos.NodeID
	Cause  Cause
	// To is, for CauseReleased, the node the group was handed to.
	To paxos.NodeID
	// Err is set only on the last event of a subscription that the Elector
	// closed (ErrSlowSubscriber); the channel is closed right after it.
	Err error
}

// String describes the event for logs.
func (e Event) String() string {
	return fmt.Sprintf("group %d epoch %d seq %d: master %d (%s)", e.Group, e.Epoch, e.Seq, e.Master, e.Cause)
}

// Kinds of event within one slot, the low two bits of an epoch.
const (
	kindLease   = 0
	kindRelease = 1
	kindExpired = 2
)

func epochOf(slot uint64, kind uint64) uint64 { return (slot+1)<<2 | kind }

// ErrSlowSubscriber is the Err of the last event of a subscriber that fell
// SubscriberQueue events behind: it was dropped so that it could not hold up
// the election. Subscribe again from the last epoch it saw of each group.
var ErrSlowSubscriber = errors.New("election: subscriber fell behind and was dropped; subscribe again from the last epochs it saw")

// ErrResync is what a ResyncError matches with errors.Is.
var ErrResync = errors.New("election: events asked for are no longer kept")

// ResyncError says that a subscriber asked for events older than the
// history keeps. Current holds every group's present state: take it as the
// truth and subscribe again from its epochs.
type ResyncError struct {
	// Groups lists the groups whose history no longer reaches back far
	// enough, with the epoch asked for and the oldest epoch it can resume
	// from.
	Groups  []ResyncGroup
	Current []GroupMaster
}

// ResyncGroup is one group of a ResyncError.
type ResyncGroup struct {
	Group        paxos.GroupID
	Since        uint64 // the epoch the subscriber asked to resume after
	OldestResume uint64 // the lowest epoch it could have resumed after
}

// Error says which groups cannot resume and what to do.
func (e *ResyncError) Error() string {
	var b strings.Builder
	b.WriteString("election: events no longer kept for")
	for i, g := range e.Groups {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " group %d after epoch %d (resumable from epoch %d)", g.Group, g.Since, g.OldestResume)
	}
	b.WriteString("; take the current masters from the error and subscribe again from their epochs")
	return b.String()
}

// Is makes errors.Is(err, ErrResync) true.
func (e *ResyncError) Is(target error) bool { return target == ErrResync }

// eventLog is a group's announced master state and its bounded history.
type eventLog struct {
	master paxos.NodeID
	epoch  uint64
	seq    uint64
	cause  Cause
	cap    int
	hist   []Event // oldest first, at most cap
	// trimmed is the epoch of the newest event dropped from hist: a reader
	// resuming after an epoch below it would miss that event.
	trimmed uint64
}

func (l *eventLog) current(g paxos.GroupID) Event {
	if n := len(l.hist); n > 0 {
		return l.hist[n-1]
	}
	return Event{Group: g, Epoch: l.epoch, Seq: l.seq, Master: l.master, Cause: l.cause}
}

// expire announces "no master" once the current lease has run out by this
// node's count.
func (e *Elector) expire(g *group, now time.Time) {
	if g.ev.master != 0 && g.cur.lease() && !now.Before(g.cur.expiry()) {
		e.emit(g, Event{Group: g.id, Epoch: epochOf(g.cur.slot, kindExpired), Master: 0, Cause: CauseExpired, Seq: g.seq})
	}
}

// emit records ev in g's history and hands it to every subscriber.
func (e *Elector) emit(g *group, ev Event) {
	if ev.Epoch <= g.ev.epoch {
		// Only possible when one slot carries a lease, a release and another
		// lease; keep the order strict anyway.
		ev.Epoch = g.ev.epoch + 1
	}
	l := &g.ev
	l.master, l.epoch, l.seq, l.cause = ev.Master, ev.Epoch, ev.Seq, ev.Cause
	if len(l.hist) == l.cap {
		l.trimmed = l.hist[0].Epoch
		copy(l.hist, l.hist[1:])
		l.hist = l.hist[:len(l.hist)-1]
	}
	l.hist = append(l.hist, ev)
	for s := range e.subs {
		e.deliver(s, ev)
	}
}

// subscriber is one Subscribe call. Its channel has one slot more than its
// queue, kept free for the event that tells why it is closed.
type subscriber struct {
	ch   chan Event
	last []uint64 // by group: the epoch of the last event delivered
}

func (e *Elector) deliver(s *subscriber, ev Event) {
	if ev.Epoch <= s.last[ev.Group] {
		return
	}
	if len(s.ch) >= cap(s.ch)-1 {
		// Never block the election on a reader: drop it, with the reason in
		// the reserved slot.
		s.ch <- Event{Group: ev.Group, Err: ErrSlowSubscriber}
		close(s.ch)
		delete(e.subs, s)
		return
	}
	s.last[ev.Group] = ev.Epoch
	s.ch <- ev
}

// Subscribe returns a channel of master-change events, a function that ends
// the subscription, or a *ResyncError.
//
// For every group g in since, the channel first carries the kept events of g
// with an epoch above since[g], in order and without gaps; if the history no
// longer reaches back that far, Subscribe fails with a *ResyncError that
// carries the current state. For every other group it first carries one
// event with the group's current state. Then it carries every change as it
// happens, in epoch order per group. A subscriber that lets SubscriberQueue
// events pile up is dropped: its last event has Err set to ErrSlowSubscriber
// and the channel is closed. Cancel closes the channel without such an event.
func (e *Elector) Subscribe(since map[paxos.GroupID]uint64) (<-chan Event, func(), error) {
	return e.subscribe(since, nil)
}

// Resume is Subscribe for a reader that says, per group, the last event it
// delivered (Epoch and Master are what count). Besides what Subscribe does,
// when the replayed events would leave the reader with another master than
// this node's present one, and this node's state is newer than the reader's
// last event (say the reader saw a lease run out on a node that died before
// it could tell of the renewal that followed), the channel first carries
// one more event, with Cause CauseRenewed or CauseExpired, that sets it right.
func (e *Elector) Resume(last map[paxos.GroupID]Event) (<-chan Event, func(), error) {
	since := make(map[paxos.GroupID]uint64, len(last))
	for g, ev := range last {
		since[g] = ev.Epoch
	}
	return e.subscribe(since, last)
}

func (e *Elector) subscribe(since map[paxos.GroupID]uint64, last map[paxos.GroupID]Event) (<-chan Event, func(), error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var resync []ResyncGroup
	for g, ep := range since {
		gr, err := e.group(g)
		if err != nil {
			return nil, nil, err
		}
		if gr.ev.trimmed > ep {
			resync = append(resync, ResyncGroup{Group: g, Since: ep, OldestResume: gr.ev.trimmed})
		}
	}
	if len(resync) > 0 {
		slices.SortFunc(resync, func(a, b ResyncGroup) int { return cmp.Compare(a.Group, b.Group) })
		return nil, nil, &ResyncError{Groups: resync, Current: e.currentLocked()}
	}
	var replay []Event
	for _, g := range e.groups {
		ep, ok := since[g.id]
		if !ok {
			replay = append(replay, g.ev.current(g.id))
			continue
		}
		have, known := last[g.id]
		for _, ev := range g.ev.hist {
			if ev.Epoch > ep {
				replay = append(replay, ev)
				have = ev
			}
		}
		if known {
			if fix, ok := e.correction(g, have); ok {
				replay = append(replay, fix)
			}
		}
	}
	s := &subscriber{ch: make(chan Event, max(e.cfg.SubscriberQueue, len(replay))+1), last: make([]uint64, len(e.groups))}
	for g, ep := range since {
		s.last[g] = ep
	}
	for _, ev := range replay {
		s.ch <- ev
		s.last[ev.Group] = ev.Epoch
	}
	e.subs[s] = struct{}{}
	cancel := func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := e.subs[s]; ok {
			delete(e.subs, s)
			close(s.ch)
		}
	}
	return s.ch, cancel, nil
}

// correction returns the event that brings a reader whose last event of g
// is have to this node's present state, when the two differ and this node's
// state is the newer one. It is not recorded in g's history: it is only
// needed by a reader that came from another node.
func (e *Elector) correction(g *group, have Event) (Event, bool) {
	if have.Master == g.ev.master || !g.cur.set {
		return Event{}, false
	}
	ev := Event{Group: g.id, Seq: g.ev.seq, Master: g.ev.master}
	if g.ev.master != 0 {
		// The reader counted out a lease whose renewal this node applied.
		ev.Epoch, ev.Cause = epochOf(g.cur.slot, kindLease), CauseRenewed
	} else {
		// This node counted out a lease whose expiry the reader missed.
		ev.Epoch, ev.Cause = g.ev.epoch, g.ev.cause
	}
	if ev.Epoch <= have.Epoch {
		return Event{}, false // the reader is ahead: this node will catch up
	}
	return ev, true
}

// currentLocked is every group's announced state, with e.mu held.
func (e *Elector) currentLocked() []GroupMaster {
	out := make([]GroupMaster, len(e.groups))
	for i, g := range e.groups {
		out[i] = GroupMaster{Group: g.id, Master: g.ev.master, Epoch: g.ev.epoch, Seq: g.ev.seq, Preferred: g.preferred}
		if g.ev.master != 0 {
			out[i].Until = g.cur.expiry()
		}
	}
	return out
}
