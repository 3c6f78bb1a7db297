package lease

import (
	"flag"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("lease.seed", 0, "run the randomized lease tests with this seed only")

// seeds returns the seeds a randomized test runs: the one given with -lease.seed, or n
// fixed ones (fewer with -short).
func seeds(n int) []uint64 {
	if *seedFlag != 0 {
		return []uint64{*seedFlag}
	}
	if testing.Short() {
		n = max(1, n/4)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

// replay says how to run one seed again.
func replay(test string, seed uint64) string {
	return "replay: go test ./lease -run '^" + test + "$' -args -lease.seed=" + strconv.FormatUint(seed, 10)
}

// stream generates a seeded random command stream that exercises every op, every
// result code and much contention: few names, many sessions, clocks that jump and
// sometimes go back, replayed positions and limit changes. It reads the table it feeds
// (through the same package) to aim releases and cancels at real grants and waits.
type stream struct {
	rng   *rand.Rand
	names []string
	pos   Position
	now   int64
	tight bool // whether the last OpSetLimits set tightLimits
}

func newStream(seed uint64) *stream {
	return &stream{
		rng:   rand.New(rand.NewPCG(seed, 0x1e45e)),
		names: []string{"a", "b", "c", "d", "e", "f", "queue/1", "queue/2"},
		now:   t0,
	}
}

// tightLimits make the limits bite in a short stream.
func tightLimits() Limits {
	l := DefaultLimits()
	l.MaxLocksPerSession = 4
	l.MaxSessionsPerClient = 4
	l.MaxWaitersPerLock = 3
	l.MaxLockDelay = 500 * time.Millisecond
	return l
}

func (g *stream) pick(n int) int { return g.rng.IntN(n) }

func (g *stream) chance(p float64) bool { return g.rng.Float64() < p }

// liveSession returns a random open session of t, or a random ID when none is open or
// sometimes on purpose.
func (g *stream) session(t *Table) uint64 {
	ids := make([]uint64, 0, len(t.sessions))
	for id := range t.sessions {
		ids = append(ids, id)
	}
	if len(ids) == 0 || g.chance(0.05) {
		return uint64(g.pick(int(t.lastSession) + 2))
	}
	slices.Sort(ids) // map order must not reach the stream
	return ids[g.pick(len(ids))]
}

// next returns the next position and command for t.
func (g *stream) next(t *Table) (Position, Command) {
	if g.chance(0.01) && t.started {
		// A replayed position: the table must answer CodeStale and change nothing.
		return t.applied, Command{Op: OpAcquire, Session: g.session(t), Name: "a", Now: g.now}
	}
	if g.chance(0.6) {
		g.pos.Index++
	} else {
		g.pos = Position{Slot: g.pos.Slot + 1 + uint64(g.pick(3))}
	}
	switch {
	case g.chance(0.03):
		g.now -= int64(g.pick(int(2 * time.Second))) // a new master with a slower clock
	case g.chance(0.05):
		if at, ok := t.NextDeadline(); ok {
			g.now = max(g.now, at) + int64(g.pick(2))
		}
	default:
		g.now += int64(g.pick(int(300 * time.Millisecond)))
	}
	c := Command{Now: g.now}
	nsessions := len(t.sessions)
	switch p := g.pick(100); {
	case p < 9 && nsessions < 40 || p < 3:
		c.Op = OpOpenSession
		c.Client = uint64(g.pick(4))
		c.TTL = []time.Duration{time.Second, 10 * time.Second, time.Millisecond}[g.pick(3)]
	case p < 12 || nsessions >= 40 && p < 20:
		c.Op = OpCloseSession
		c.Session = g.session(t)
	case p < 19 || nsessions >= 40 && p < 30:
		c.Op = OpExpireSession
		c.Session = g.session(t)
	case p < 60:
		c.Op = OpAcquire
		c.Session = g.session(t)
		c.Name = g.names[g.pick(len(g.names))]
		c.Shared = g.chance(0.4)
		c.Wait = g.chance(0.6)
		if g.chance(0.3) {
			c.LockDelay = []time.Duration{100 * time.Millisecond, 400 * time.Millisecond, time.Second}[g.pick(3)]
		}
		if g.chance(0.2) {
			c.Metadata = []byte(c.Name + "-meta")
		}
		if g.chance(0.01) {
			c.Name = []string{"", strings.Repeat("x", 513)}[g.pick(2)]
		}
	case p < 85:
		c.Op = OpRelease
		c.Session = g.session(t)
		c.Name = g.names[g.pick(len(g.names))]
		if s := t.sessions[c.Session]; s != nil && len(s.held) > 0 && g.chance(0.9) {
			l := s.held[g.pick(len(s.held))]
			c.Name = l.name
			c.Token = l.holders[l.holderIndex(s)].token
		}
		if g.chance(0.1) {
			c.Token += uint64(g.pick(3))
		}
	case p < 93:
		c.Op = OpCancelWait
		c.Session = g.session(t)
		c.Name = g.names[g.pick(len(g.names))]
		if s := t.sessions[c.Session]; s != nil && len(s.waits) > 0 && g.chance(0.8) {
			c.Name = s.waits[g.pick(len(s.waits))].name
		}
	case p < 99:
		c.Op = OpTick
	default:
		c.Op = OpSetLimits
		g.tight = !g.tight
		c.Limits = DefaultLimits()
		if g.tight {
			c.Limits = tightLimits()
		}
		if g.chance(0.1) {
			c.Limits.MaxNameBytes = 0 // refused: CodeInvalid
		}
	}
	return g.pos, c
}
