package replica

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// hangGuard bounds every wait of the durability tests. It is not a timing
// assertion: it only turns a hang into a failure on a loaded machine.
const hangGuard = 30 * time.Second

// gatedStore is a Store whose synced Save blocks until the test releases
// it. It records what each Save was asked to write and keeps a model of
// what is durable: the writes of the Saves that have returned (with the
// unsynced writes before them, which a synced write makes durable, as in a
// write-ahead log). Unsynced writes alone are not durable.
type gatedStore struct {
	mem     *paxos.MemoryStorage
	started chan *saveCall // one per Save, in call order, when it begins
	closed  chan struct{}  // closed at cleanup: every Save returns at once
	close   sync.Once

	mu       sync.Mutex
	saving   int                // Saves begun and not returned
	returned int                // Saves returned
	unsynced []paxos.GroupWrite // written by SaveUnsynced, not yet durable
	durable  durableState
}

// saveCall is one Save in progress, blocked until release is called.
type saveCall struct {
	n       int                // 1 for the first Save
	writes  []paxos.GroupWrite // a deep copy of the argument
	release func()
}

// durableState is what the store has made durable, in terms of what a reply
// may vouch for.
type durableState struct {
	promised map[paxos.GroupID]paxos.Ballot
	commit   map[paxos.GroupID]uint64
	// accepted holds every (ballot, value) ever durably written per slot.
	accepted map[slotKey]map[paxos.Ballot]paxos.ValueID
}

type slotKey struct {
	g    paxos.GroupID
	slot uint64
}

func newGatedStore() *gatedStore {
	return &gatedStore{
		mem:     paxos.NewMemoryStorage(),
		started: make(chan *saveCall, 1024),
		closed:  make(chan struct{}),
		durable: durableState{
			promised: map[paxos.GroupID]paxos.Ballot{},
			commit:   map[paxos.GroupID]uint64{},
			accepted: map[slotKey]map[paxos.Ballot]paxos.ValueID{},
		},
	}
}

// unblock makes every Save, present and future, return at once.
func (s *gatedStore) unblock() { s.close.Do(func() { close(s.closed) }) }

func (s *gatedStore) HardState(g paxos.GroupID) (paxos.HardState, error) {
	return s.mem.HardState(g)
}

func (s *gatedStore) Entries(g paxos.GroupID, from, to uint64, max int) ([]paxos.Entry, error) {
	return s.mem.Entries(g, from, to, max)
}

// Save announces itself on started and blocks until the test releases it.
func (s *gatedStore) Save(writes []paxos.GroupWrite) error {
	cp := copyWrites(writes)
	gate := make(chan struct{})
	var once sync.Once
	s.mu.Lock()
	s.saving++
	call := &saveCall{n: s.returned + s.saving, writes: cp, release: func() { once.Do(func() { close(gate) }) }}
	s.mu.Unlock()
	select {
	case s.started <- call:
	case <-s.closed:
	}
	select {
	case <-gate:
	case <-s.closed:
	}
	if err := s.mem.Save(writes); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.durable.add(s.unsynced)
	s.unsynced = nil
	s.durable.add(cp)
	s.saving--
	s.returned++
	return nil
}

func (d *durableState) add(writes []paxos.GroupWrite) {
	for _, w := range writes {
		if w.Hard != nil {
			if d.promised[w.Group].Less(w.Hard.Promised) {
				d.promised[w.Group] = w.Hard.Promised
			}
			d.commit[w.Group] = max(d.commit[w.Group], w.Hard.Commit)
		}
		for _, e := range w.Entries {
			k := slotKey{w.Group, e.Slot}
			if d.accepted[k] == nil {
				d.accepted[k] = map[paxos.Ballot]paxos.ValueID{}
			}
			d.accepted[k][e.Ballot] = e.Value.ID
		}
	}
}

// vouched says why m, sent by this node, vouches for state that is not
// durable, or returns nil. Promise, Accepted and Nack vouch for the
// acceptor's promise (and a Promise for the entries it reports, an Accepted
// for the entry it acknowledges); this node's own Prepare vouches for its
// ballot, which it must never reuse after a restart (paxos rule 4).
// Requests other than the own Prepare vouch for nothing.
func (d *durableState) vouched(m *paxos.Message) error {
	promised := d.promised[m.Group]
	switch m.Type {
	case paxos.MsgPromise, paxos.MsgAccepted, paxos.MsgNack, paxos.MsgPrepare:
		if promised.Less(m.Ballot) {
			return fmt.Errorf("durable promise is %v, below the ballot %v it vouches for", promised, m.Ballot)
		}
	}
	switch m.Type {
	case paxos.MsgPromise:
		for _, e := range m.Entries {
			if id, ok := d.accepted[slotKey{m.Group, e.Slot}][e.Ballot]; !ok || id != e.Value.ID {
				return fmt.Errorf("reports slot %d accepted at %v (value %v), which is not durable", e.Slot, e.Ballot, e.Value.ID)
			}
		}
	case paxos.MsgAccepted:
		// An Accept for a slot already chosen is acknowledged without a
		// write: the durable commit index covers it.
		if _, ok := d.accepted[slotKey{m.Group, m.Slot}][m.Ballot]; !ok && m.Slot >= d.commit[m.Group] {
			return fmt.Errorf("acknowledges slot %d at %v, which is not durable", m.Slot, m.Ballot)
		}
	}
	return nil
}

func copyWrites(ws []paxos.GroupWrite) []paxos.GroupWrite {
	out := make([]paxos.GroupWrite, len(ws))
	for i, w := range ws {
		out[i].Group = w.Group
		if w.Hard != nil {
			h := *w.Hard
			out[i].Hard = &h
		}
		out[i].Entries = slices.Clone(w.Entries)
	}
	return out
}

// unsyncedGatedStore is a gatedStore that also implements UnsyncedSaver:
// SaveUnsynced never blocks and makes nothing durable by itself.
type unsyncedGatedStore struct{ *gatedStore }

func (s unsyncedGatedStore) SaveUnsynced(writes []paxos.GroupWrite) error {
	if err := s.mem.SaveUnsynced(writes); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsynced = append(s.unsynced, copyWrites(writes)...)
	return nil
}

// How an Accept delivered by gatedReplica.accept is marked.
const (
	plain = iota
	urgent
	contended // urgent too, as the core sends it
)

// markBallot is the ballot of the Accepts gatedReplica.accept delivers.
var markBallot = paxos.Ballot{Round: 1, Node: 2}

// accept delivers node 2's Accept for slot of group g, marked as mark says.
func (gr *gatedReplica) accept(t *testing.T, g paxos.GroupID, slot uint64, mark int) {
	t.Helper()
	gr.deliver(t, paxos.Message{Type: paxos.MsgAccept, Group: g, From: 2, Ballot: markBallot, Urgent: mark != plain, Contended: mark == contended,
		Entries: []paxos.Entry{{Slot: slot, Value: paxos.Value{ID: paxos.ValueID{Ballot: markBallot, N: uint64(g)<<8 | slot}}}}})
}

// expectSave waits for the next Save, checks that it writes exactly the
// entries want (in any order), and lets it finish.
func (gr *gatedReplica) expectSave(t *testing.T, what string, want ...slotKey) {
	t.Helper()
	c := gr.nextSave(t)
	var got []slotKey
	for _, w := range c.writes {
		for _, e := range w.Entries {
			got = append(got, slotKey{w.Group, e.Slot})
		}
	}
	slices.SortFunc(got, func(a, b slotKey) int { return cmp.Or(cmp.Compare(a.g, b.g), cmp.Compare(a.slot, b.slot)) })
	if !slices.Equal(got, want) {
		t.Fatalf("%s: the Save writes %v, want %v", what, got, want)
	}
	c.release()
}

// signalled waits (bounded) for a test hook to say that what happened.
func signalled(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		t.Fatalf("no %s within %v", what, hangGuard)
	}
}

// nextSave waits for the next Save to begin and returns it, still blocked.
// It fails at once if a reply has already left before its state was
// durable, rather than wait for a Save that may never come.
func (gr *gatedReplica) nextSave(t *testing.T) *saveCall {
	t.Helper()
	select {
	case c := <-gr.store.started:
		return c
	case <-gr.tr.bad:
		gr.tr.checkVouched(t)
		t.FailNow()
	case <-time.After(hangGuard):
		t.Fatalf("no Save began within %v", hangGuard)
	}
	return nil
}

// hard returns the hard state c writes for g, or nil.
func (c *saveCall) hard(g paxos.GroupID) *paxos.HardState {
	for _, w := range c.writes {
		if w.Group == g && w.Hard != nil {
			return w.Hard
		}
	}
	return nil
}

// entry returns the entry c writes for g's slot.
func (c *saveCall) entry(g paxos.GroupID, slot uint64) (paxos.Entry, bool) {
	for _, w := range c.writes {
		if w.Group != g {
			continue
		}
		for _, e := range w.Entries {
			if e.Slot == slot {
				return e, true
			}
		}
	}
	return paxos.Entry{}, false
}

// sentMsg is one message the replica sent, with the number of Saves that
// had returned when it left.
type sentMsg struct {
	paxos.Message
	savesBefore int
}

func (m sentMsg) String() string {
	return fmt.Sprintf("%v (after %d returned Saves)", &m.Message, m.savesBefore)
}

// recTransport records every message sent and checks, at the moment of each
// Send, that every reply of this node vouches only for durable state.
type recTransport struct {
	store *gatedStore
	self  paxos.NodeID

	mu         sync.Mutex
	sent       []sentMsg
	violations []string
	notify     chan struct{} // signalled after each Send
	bad        chan struct{} // closed at the first violation
	badOnce    sync.Once
}

func newRecTransport(s *gatedStore, self paxos.NodeID) *recTransport {
	return &recTransport{store: s, self: self, notify: make(chan struct{}, 1), bad: make(chan struct{})}
}

func (tr *recTransport) Send(msgs []paxos.Message) {
	tr.store.mu.Lock()
	saves := tr.store.returned
	var bad []string
	for i := range msgs {
		m := &msgs[i]
		if m.From != tr.self {
			continue
		}
		if err := tr.store.durable.vouched(m); err != nil {
			bad = append(bad, fmt.Sprintf("%v left after %d returned Saves (%d in progress): %v", m, saves, tr.store.saving, err))
		}
	}
	tr.store.mu.Unlock()
	tr.mu.Lock()
	for _, m := range msgs {
		m.Entries = slices.Clone(m.Entries)
		tr.sent = append(tr.sent, sentMsg{Message: m, savesBefore: saves})
	}
	if len(bad) > 0 {
		tr.badOnce.Do(func() { close(tr.bad) })
	}
	tr.violations = append(tr.violations, bad...)
	tr.mu.Unlock()
	select {
	case tr.notify <- struct{}{}:
	default:
	}
}

// find returns the sent messages that match.
func (tr *recTransport) find(match func(*paxos.Message) bool) []sentMsg {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []sentMsg
	for i := range tr.sent {
		if match(&tr.sent[i].Message) {
			out = append(out, tr.sent[i])
		}
	}
	return out
}

// waitFor waits until a sent message matches and returns the first one.
func (tr *recTransport) waitFor(t *testing.T, what string, match func(*paxos.Message) bool) sentMsg {
	t.Helper()
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
	for {
		if ms := tr.find(match); len(ms) > 0 {
			return ms[0]
		}
		select {
		case <-tr.notify:
		case <-guard.C:
			t.Fatalf("%s was not sent within %v; sent: %v", what, hangGuard, tr.find(func(*paxos.Message) bool { return true }))
		}
	}
}

// checkNone fails if a sent message matches: it must not have left yet.
func (tr *recTransport) checkNone(t *testing.T, why string, match func(*paxos.Message) bool) {
	t.Helper()
	if ms := tr.find(match); len(ms) > 0 {
		t.Fatalf("%s, yet it left: %v", why, ms)
	}
}

// checkVouched reports every reply that left before its state was durable,
// once per test.
func (tr *recTransport) checkVouched(t *testing.T) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, v := range tr.violations {
		t.Errorf("reply before its state was durable: %s", v)
	}
	tr.violations = nil
}

// msg builds a matcher for messages of type typ in group g from from to to
// under ballot b (a zero field matches anything).
func msg(typ paxos.MsgType, g paxos.GroupID, from, to paxos.NodeID, b paxos.Ballot) func(*paxos.Message) bool {
	return func(m *paxos.Message) bool {
		return m.Type == typ && m.Group == g && (from == 0 || m.From == from) && (to == 0 || m.To == to) && (b.IsZero() || m.Ballot == b)
	}
}

// vouching matches every message that vouches for this node's durable state.
func vouching(self paxos.NodeID) func(*paxos.Message) bool {
	return func(m *paxos.Message) bool {
		switch m.Type {
		case paxos.MsgPromise, paxos.MsgAccepted, paxos.MsgNack, paxos.MsgPrepare:
			return m.From == self
		}
		return false
	}
}

// gatedReplica is node 1 of nodes {1, 2, 3}, running on a gatedStore and a
// recTransport. Its clock never ticks within a test (Tick is an hour), so
// it does nothing by itself: the test drives it with messages.
type gatedReplica struct {
	*Replica
	store *gatedStore
	tr    *recTransport
}

type gatedVariant struct {
	name     string
	unsynced bool          // the store implements UnsyncedSaver
	wait     time.Duration // Config.GroupCommitWait
	recent   time.Duration // Replica.recent, when set
	waiting  func()        // Replica.waiting
	yieldGap time.Duration // Config.YieldGap
	yieldFor time.Duration // Replica.yieldFor, when set
	yielding func()        // Replica.yielding
}

var gatedVariants = []gatedVariant{
	{name: "Save"},
	{name: "UnsyncedSaver", unsynced: true},
	{name: "GroupCommitWait", wait: time.Millisecond},
}

func startGated(t *testing.T, groups int, v gatedVariant) *gatedReplica {
	t.Helper()
	st := newGatedStore()
	tr := newRecTransport(st, 1)
	var store Store = st
	if v.unsynced {
		store = unsyncedGatedStore{st}
	}
	ids := []paxos.NodeID{1, 2, 3}
	r, err := New(Config{
		Core:            paxos.Config{ID: 1, Nodes: ids, Groups: groups, Rand: func(int) int { return 0 }},
		Tick:            time.Hour,
		Store:           store,
		Transport:       tr,
		StateMachine:    &counter{},
		GroupCommitWait: v.wait,
		YieldGap:        v.yieldGap,
	})
	if err != nil {
		t.Fatal(err)
	}
	if v.recent > 0 {
		r.recent = v.recent
	}
	r.waiting = v.waiting
	if v.yieldFor > 0 {
		r.yieldFor = v.yieldFor
	}
	r.yielding = v.yielding
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		tr.checkVouched(t)
		st.unblock()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("replica stopped: %v", err)
			}
		case <-time.After(hangGuard):
			t.Errorf("replica did not stop within %v", hangGuard)
		}
	})
	return &gatedReplica{Replica: r, store: st, tr: tr}
}

// deliver hands m to the replica and returns once the replica has stepped
// it and handed the resulting Ready on (sent what may leave at once and
// queued the rest for the persister).
func (gr *gatedReplica) deliver(t *testing.T, m paxos.Message) {
	t.Helper()
	m.To = 1
	if !gr.Deliver(m) {
		t.Fatalf("inbox full")
	}
	gr.settle(t)
}

// settle returns once everything that reached the replica before the call
// has been stepped and its Ready handled. A query runs on the loop between
// iterations; the loop may take the first one before messages that were
// already waiting, but it steps those in the same iteration (drain) and
// handles their Ready before it takes the second query.
func (gr *gatedReplica) settle(t *testing.T) {
	t.Helper()
	for range 2 {
		done := make(chan struct{})
		select {
		case gr.queries <- func(*paxos.Node) { close(done) }:
		case <-time.After(hangGuard):
			t.Fatalf("the replica's loop took no query within %v", hangGuard)
		}
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Fatalf("the replica's loop ran no query within %v", hangGuard)
		}
	}
}

// status reads group g's status on the loop.
func (gr *gatedReplica) status(t *testing.T, g paxos.GroupID) paxos.GroupStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	st, err := gr.Status(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
