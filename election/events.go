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
	}
	return "none"
}

// Event is a change of a group's master.
//
// Epoch orders the events of a group and is derived from the log, so that
// events of different nodes compare: a lease or release chosen at slot s
// gives epoch 4(s+1) or 4(s+1)+1, and the expiry of the lease chosen at s
// gives 4(s+1)+2. Epoch 0 is the state before any lease. Every node sees the
// same lease and release events; an expiry is seen by a node whose count of
// the lease ran out before the next command reached it, so the expiry events
// of two nodes may differ while their epochs still interleave correctly.
type Event struct {
	Group paxos.GroupID
	Epoch uint64
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
	return fmt.Sprintf("group %d epoch %d: master %d (%s)", e.Group, e.Epoch, e.Master, e.Cause)
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
	return Event{Group: g, Epoch: l.epoch, Master: l.master, Cause: l.cause}
}

// expire announces "no master" once the current lease has run out by this
// node's count.
func (e *Elector) expire(g *group, now time.Time) {
	if g.ev.master != 0 && g.cur.lease() && !now.Before(g.cur.expiry()) {
		e.emit(g, Event{Group: g.id, Epoch: epochOf(g.cur.slot, kindExpired), Master: 0, Cause: CauseExpired})
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
	l.master, l.epoch, l.cause = ev.Master, ev.Epoch, ev.Cause
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
		for _, ev := range g.ev.hist {
			if ev.Epoch > ep {
				replay = append(replay, ev)
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

// currentLocked is every group's announced state, with e.mu held.
func (e *Elector) currentLocked() []GroupMaster {
	out := make([]GroupMaster, len(e.groups))
	for i, g := range e.groups {
		out[i] = GroupMaster{Group: g.id, Master: g.ev.master, Epoch: g.ev.epoch, Preferred: g.preferred}
		if g.ev.master != 0 {
			out[i].Until = g.cur.expiry()
		}
	}
	return out
}
