package lease

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
)

// model is what the lock table must look like, rebuilt from commands, results and events
// alone, without reading the table's internals. After every command the test compares
// it with the table, so a wrong grant, a lost waiter or a broken order shows up at the
// command that caused it.
type model struct {
	now        int64
	lastToken  uint64 // largest token seen in any grant
	lastSess   uint64
	live       map[uint64]bool
	holders    map[string]map[uint64]modelGrant // lock name, then session
	queue      map[string][]modelWait           // lock name, FIFO
	delayUntil map[string]int64                 // expected end of each lock-delay
	nameToken  map[string]uint64                // largest token per name
}

type modelGrant struct {
	token  uint64
	shared bool
	delay  time.Duration
}

type modelWait struct {
	session uint64
	shared  bool
	delay   time.Duration
}

func newModel() *model {
	return &model{
		live:       map[uint64]bool{},
		holders:    map[string]map[uint64]modelGrant{},
		queue:      map[string][]modelWait{},
		delayUntil: map[string]int64{},
		nameToken:  map[string]uint64{},
	}
}

func (m *model) queued(name string, s uint64) int {
	return slices.IndexFunc(m.queue[name], func(w modelWait) bool { return w.session == s })
}

// step checks the result of c against the model and updates the model.
func (m *model) step(c Command, r Result) error {
	if r.Code == CodeStale {
		if len(r.Events) != 0 {
			return fmt.Errorf("stale command has events %v", r.Events)
		}
		return nil
	}
	m.now = max(m.now, c.Now)
	// An ending session dies with its first event of this command. Lock-delays that
	// ended at the command's time are handled before the op, so they may grant it a
	// lock just before it ends: that grant is legitimate, and is released at once.
	ending := (c.Op == OpCloseSession || c.Op == OpExpireSession) && r.Code == CodeOK
	if (c.Op == OpCloseSession || c.Op == OpExpireSession) && r.Code == CodeSessionUnknown && m.live[c.Session] {
		return fmt.Errorf("session %d is open but the table does not know it", c.Session)
	}
	if c.Op == OpOpenSession && r.Code == CodeOK {
		if r.Session != m.lastSess+1 {
			return fmt.Errorf("opened session %d after %d", r.Session, m.lastSess)
		}
		m.lastSess = r.Session
		m.live[r.Session] = true
	}
	if c.Op == OpAcquire && r.Code == CodeQueued && m.queued(c.Name, c.Session) < 0 {
		if _, ok := m.holders[c.Name][c.Session]; ok {
			return fmt.Errorf("session %d queued for %q which it holds", c.Session, c.Name)
		}
		m.queue[c.Name] = append(m.queue[c.Name], modelWait{c.Session, c.Shared, c.LockDelay})
	}
	directGrant := false
	for _, e := range r.Events {
		if ending && e.Session == c.Session && e.Kind != EventGranted {
			delete(m.live, c.Session)
		}
		switch e.Kind {
		case EventGranted:
			if !m.live[e.Session] {
				return fmt.Errorf("granted %q to session %d, which is not open", e.Name, e.Session)
			}
			if e.Token <= m.lastToken || e.Token <= m.nameToken[e.Name] {
				return fmt.Errorf("token %d for %q after token %d (table) and %d (name)", e.Token, e.Name, m.lastToken, m.nameToken[e.Name])
			}
			m.lastToken, m.nameToken[e.Name] = e.Token, e.Token
			if m.now < m.delayUntil[e.Name] {
				return fmt.Errorf("granted %q at %d, during its lock-delay until %d", e.Name, m.now, m.delayUntil[e.Name])
			}
			for s, g := range m.holders[e.Name] {
				if !g.shared || !e.Shared {
					return fmt.Errorf("granted %q (shared=%v) to %d while session %d holds it (shared=%v)", e.Name, e.Shared, e.Session, s, g.shared)
				}
			}
			g := modelGrant{token: e.Token, shared: e.Shared}
			if i := m.queued(e.Name, e.Session); i >= 0 {
				if i != 0 {
					return fmt.Errorf("granted %q to session %d, number %d in the queue", e.Name, e.Session, i)
				}
				w := m.queue[e.Name][0]
				m.queue[e.Name] = m.queue[e.Name][1:]
				g.shared, g.delay = w.shared, w.delay
			} else {
				if c.Op != OpAcquire || c.Name != e.Name || c.Session != e.Session || directGrant {
					return fmt.Errorf("grant of %q to %d that nobody asked for", e.Name, e.Session)
				}
				if len(m.queue[e.Name]) > 0 {
					return fmt.Errorf("granted %q to %d ahead of %d waiters", e.Name, e.Session, len(m.queue[e.Name]))
				}
				if r.Token != e.Token || e.Shared != c.Shared {
					return fmt.Errorf("result token %d, event %+v", r.Token, e)
				}
				directGrant = true
				g.delay = c.LockDelay
			}
			if m.holders[e.Name] == nil {
				m.holders[e.Name] = map[uint64]modelGrant{}
			}
			m.holders[e.Name][e.Session] = g
		case EventReleased, EventExpired:
			g, ok := m.holders[e.Name][e.Session]
			if !ok || g.token != e.Token || g.shared != e.Shared {
				return fmt.Errorf("%v of %q by %d token %d, model holder %+v (%v)", e.Kind, e.Name, e.Session, e.Token, g, ok)
			}
			switch {
			case e.Kind == EventExpired && (c.Op != OpExpireSession || c.Session != e.Session):
				return fmt.Errorf("expiry event %+v from %v", e, c.Op)
			case e.Kind == EventReleased && (c.Op != OpRelease && c.Op != OpCloseSession || c.Session != e.Session):
				return fmt.Errorf("release event %+v from %v", e, c.Op)
			}
			delete(m.holders[e.Name], e.Session)
			if e.Kind == EventExpired && g.delay > 0 {
				m.delayUntil[e.Name] = max(m.delayUntil[e.Name], m.now+int64(g.delay))
			}
		case EventCanceled:
			i := m.queued(e.Name, e.Session)
			if i < 0 || c.Session != e.Session {
				return fmt.Errorf("cancel of %q by %d, which was not queued", e.Name, e.Session)
			}
			m.queue[e.Name] = slices.Delete(m.queue[e.Name], i, i+1)
		default:
			return fmt.Errorf("unknown event %+v", e)
		}
	}
	if c.Op == OpAcquire && r.Code == CodeOK && !directGrant {
		if g, ok := m.holders[c.Name][c.Session]; !ok || g.token != r.Token {
			return fmt.Errorf("acquire answered token %d without a grant, model %+v", r.Token, g)
		}
	}
	if ending {
		delete(m.live, c.Session)
		for name := range m.holders {
			if _, ok := m.holders[name][c.Session]; ok || m.queued(name, c.Session) >= 0 {
				return fmt.Errorf("ended session %d still in %q", c.Session, name)
			}
		}
	}
	return nil
}

// compare checks the table's answers to queries against the model.
func (m *model) compare(t *Table, names []string) error {
	if t.Now() != m.now {
		return fmt.Errorf("clock %d, model %d", t.Now(), m.now)
	}
	ids := slices.Sorted(maps.Keys(m.live))
	var got []uint64
	for _, s := range t.Sessions() {
		got = append(got, s.ID)
	}
	if !slices.Equal(got, ids) {
		return fmt.Errorf("sessions %v, model %v", got, ids)
	}
	for _, name := range names {
		info, _ := t.Lock(name)
		holders := m.holders[name]
		if len(info.Holders) != len(holders) || info.Waiters != len(m.queue[name]) {
			return fmt.Errorf("lock %q: %d holders %d waiters, model %d and %d", name, len(info.Holders), info.Waiters, len(holders), len(m.queue[name]))
		}
		for _, h := range info.Holders {
			if g, ok := holders[h.Session]; !ok || g.token != h.Token || g.shared != info.Shared || !t.Validate(name, h.Token) {
				return fmt.Errorf("lock %q: holder %+v, model %+v", name, h, g)
			}
		}
		if l := t.locks[name]; l != nil {
			for i, w := range l.waiters {
				if mw := m.queue[name][i]; mw.session != w.s.id || mw.shared != w.shared {
					return fmt.Errorf("lock %q: waiter %d is session %d, model %d (FIFO order)", name, i, w.s.id, mw.session)
				}
			}
		}
		// Liveness: the head of a queue waits only for a reason.
		delayed := m.now < m.delayUntil[name]
		if q := m.queue[name]; len(q) > 0 && !delayed {
			compatible := true
			for _, g := range holders {
				if !g.shared || !q[0].shared {
					compatible = false
				}
			}
			if compatible {
				return fmt.Errorf("lock %q: session %d waits though nothing stops it", name, q[0].session)
			}
		}
		if delayed != (info.DelayUntil > t.Now()) || delayed && info.DelayUntil != m.delayUntil[name] {
			return fmt.Errorf("lock %q: lock-delay until %d, model %d", name, info.DelayUntil, m.delayUntil[name])
		}
	}
	return nil
}

func TestRandomModel(t *testing.T) {
	const steps = 4000
	for _, seed := range seeds(16) {
		g := newStream(seed)
		tb := New(DefaultLimits())
		m := newModel()
		codes := map[Code]int{}
		for i := range steps {
			pos, c := g.next(tb)
			r := tb.Apply(pos, c)
			codes[r.Code]++
			err := m.step(c, r)
			if err == nil {
				err = checkInvariants(tb)
			}
			if err == nil {
				err = m.compare(tb, g.names)
			}
			if err != nil {
				t.Fatalf("seed %d, step %d, %v at %v (%+v) -> %v %v: %v\n%s",
					seed, i, c.Op, pos, c, r.Code, r.Events, err, replay("TestRandomModel", seed))
			}
		}
		// The stream must reach every result code, or the test proves less than it says.
		for code := range CodeStale + 1 {
			if codes[code] == 0 && !testing.Short() {
				t.Errorf("seed %d: no command ended with %v: the stream misses a case (%v)", seed, code, codes)
			}
		}
	}
}

// TestReplicasAgreeByteForByte applies one random stream to two tables, and to a third
// restored from the first's snapshot halfway through, and to a fourth that replaces
// itself with its own snapshot every few commands. All must answer every command alike
// and end with the same snapshot bytes.
func TestReplicasAgreeByteForByte(t *testing.T) {
	const steps = 3000
	for _, seed := range seeds(8) {
		g := newStream(seed)
		a, b, d := New(DefaultLimits()), New(DefaultLimits()), New(DefaultLimits())
		var c *Table
		for i := range steps {
			if i == steps/2 {
				c = New(tightLimits()) // configured differently: the snapshot decides
				if err := c.Restore(a.Snapshot()); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
			if i%97 == 0 {
				snap := d.Snapshot()
				d = New(DefaultLimits())
				if err := d.Restore(snap); err != nil {
					t.Fatalf("seed %d, step %d: %v", seed, i, err)
				}
			}
			pos, cmd := g.next(a)
			ra := a.Apply(pos, cmd)
			for name, x := range map[string]*Table{"b": b, "c": c, "d": d} {
				if x == nil {
					continue
				}
				if rx := x.Apply(pos, cmd); !reflect.DeepEqual(rx, ra) {
					t.Fatalf("seed %d, step %d, %v: replica %s answered %+v, a answered %+v\n%s",
						seed, i, cmd.Op, name, rx, ra, replay("TestReplicasAgreeByteForByte", seed))
				}
			}
		}
		sa := a.Snapshot()
		for name, x := range map[string]*Table{"b": b, "c": c, "d": d} {
			if !bytes.Equal(x.Snapshot(), sa) {
				t.Fatalf("seed %d: replica %s ends with other snapshot bytes\n%s", seed, name, replay("TestReplicasAgreeByteForByte", seed))
			}
		}
		if st := a.Stats(); st.LastToken < 100 {
			t.Fatalf("seed %d: only %d grants: the stream is too tame", seed, st.LastToken)
		}
	}
}
