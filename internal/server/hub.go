package server

import (
	"sync"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
)

// waitKey names a queued acquire: the session that waits and the lock.
type waitKey struct {
	g       paxos.GroupID
	session uint64
	name    string
}

type subscription struct {
	st    *clientStream
	reqID uint64
}

// hub routes lock-table events to the clients that wait or watch on this
// node. Every node applies the whole log, so any node can serve watches; a
// waiter is registered on the node its Acquire went to.
type hub struct {
	mu       sync.Mutex
	waiters  map[waitKey]subscription
	watchers map[string]map[*clientStream]uint64 // name -> stream -> reqID
}

func newHub() *hub {
	return &hub{waiters: map[waitKey]subscription{}, watchers: map[string]map[*clientStream]uint64{}}
}

func (h *hub) addWaiter(k waitKey, sub subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiters[k] = sub
}

func (h *hub) removeWaiter(k waitKey, st *clientStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w, ok := h.waiters[k]; ok && w.st == st {
		delete(h.waiters, k)
	}
}

func (h *hub) watch(name string, st *clientStream, reqID uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.watchers[name]
	if m == nil {
		m = map[*clientStream]uint64{}
		h.watchers[name] = m
	}
	m[st] = reqID
}

func (h *hub) unwatch(name string, st *clientStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.watchers[name]; m != nil {
		delete(m, st)
		if len(m) == 0 {
			delete(h.watchers, name)
		}
	}
}

// dropStream forgets everything registered by a closed stream.
func (h *hub) dropStream(st *clientStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, w := range h.waiters {
		if w.st == st {
			delete(h.waiters, k)
		}
	}
	for name, m := range h.watchers {
		delete(m, st)
		if len(m) == 0 {
			delete(h.watchers, name)
		}
	}
}

// watchedStates reads, from the group's table right after the command that
// caused events, the state of every watched lock among them, so that each
// change a watcher gets says who holds the lock and how many wait. The
// caller holds the group's lock; locks that nobody watches cost nothing.
func (h *hub) watchedStates(events []lease.Event, table *lease.Table) map[string]eventState {
	h.mu.Lock()
	defer h.mu.Unlock()
	var states map[string]eventState
	for _, ev := range events {
		if len(h.watchers[ev.Name]) == 0 {
			continue
		}
		if _, done := states[ev.Name]; done {
			continue
		}
		if states == nil {
			states = map[string]eventState{}
		}
		info, _ := table.Lock(ev.Name) // a free lock: no holders, no waiters
		states[ev.Name] = newEventState(info)
	}
	return states
}

// eventState is a lock's state as a lock event carries it: at most
// wire.MaxEventHolders holders, without their metadata (LockStatus has it).
type eventState struct {
	holders []wire.HolderItem
	count   uint32
	waiters uint32
}

func newEventState(info lease.LockInfo) eventState {
	st := eventState{count: uint32(len(info.Holders)), waiters: uint32(info.Waiters)}
	for i, h := range info.Holders {
		if i == wire.MaxEventHolders {
			break
		}
		st.holders = append(st.holders, wire.HolderItem{Session: h.Session, Token: h.Token, Shared: info.Shared})
	}
	return st
}

// publish pushes events to waiters and watchers, with the slot whose
// command caused them and, for watchers, the lock's state after that
// command (states, from watchedStates). It runs on the replica's goroutine
// and never blocks: a stream whose queue is full is closed.
func (h *hub) publish(g paxos.GroupID, slot uint64, events []lease.Event, states map[string]eventState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range events {
		k := waitKey{g: g, session: ev.Session, name: ev.Name}
		if w, ok := h.waiters[k]; ok {
			switch ev.Kind {
			case lease.EventGranted:
				delete(h.waiters, k)
				w.st.push(&wire.Msg{Type: wire.TypeEvent, ReqID: w.reqID, Kind: wire.EventGranted, Group: uint32(g), Slot: slot,
					Session: ev.Session, Name: ev.Name, Token: ev.Token, Code: wire.CodeOK})
			case lease.EventCanceled:
				delete(h.waiters, k)
				w.st.push(&wire.Msg{Type: wire.TypeEvent, ReqID: w.reqID, Kind: wire.EventLost, Group: uint32(g),
					Session: ev.Session, Name: ev.Name, Code: wire.CodeSessionUnknown,
					Err: "the wait ended: its session closed or expired, or the wait was canceled"})
			}
		}
		watchers := h.watchers[ev.Name]
		if len(watchers) == 0 {
			continue
		}
		flags := sharedFlag(ev.Shared)
		state, ok := states[ev.Name]
		if ok {
			flags |= wire.FlagState
		}
		for st, reqID := range watchers {
			st.push(&wire.Msg{Type: wire.TypeEvent, ReqID: reqID, Kind: wire.EventKind(ev.Kind), Group: uint32(g), Slot: slot,
				Session: ev.Session, Name: ev.Name, Token: ev.Token, Flags: flags,
				Holders: state.holders, HolderCount: state.count, Waiters: state.waiters})
		}
	}
}

func sharedFlag(shared bool) wire.Flags {
	if shared {
		return wire.FlagShared
	}
	return 0
}
