package lease

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"
	"time"
)

// richTable builds a table with every kind of state: exclusive and shared holders,
// queues of both modes, metadata, a lock in lock-delay with waiters, one without, and
// changed limits.
func richTable(tb testing.TB) *harness {
	h := newHarness(tb)
	lim := DefaultLimits()
	lim.MaxNameBytes = 100
	h.apply(Command{Op: OpSetLimits, Limits: lim})
	a, b, c, d := h.open(1), h.open(1), h.open(2), h.open(3)
	h.apply(Command{Op: OpAcquire, Session: a, Name: "excl", Metadata: []byte("owner=a"), LockDelay: time.Second})
	h.mustQueue(b, "excl", true)
	h.mustQueue(c, "excl", false)
	h.mustGrant(b, "shared", true, 0)
	h.mustGrant(c, "shared", true, 2*time.Second)
	h.mustQueue(a, "shared", false)
	h.mustQueue(d, "shared", true)
	h.mustGrant(d, "delayed", false, 5*time.Second)
	h.mustQueue(b, "delayed", false)
	h.mustGrant(d, "tombstone", false, 7*time.Second)
	h.advance(time.Second)
	h.apply(Command{Op: OpExpireSession, Session: d})
	return h
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := richTable(t)
	snap := h.t.Snapshot()
	r := New(DefaultLimits())
	if err := r.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if err := checkInvariants(r); err != nil {
		t.Fatal(err)
	}
	if got := r.Snapshot(); !bytes.Equal(got, snap) {
		t.Fatal("snapshot of the restored table differs")
	}
	for _, name := range []string{"excl", "shared", "delayed", "tombstone", "none"} {
		want, wok := h.t.Lock(name)
		got, gok := r.Lock(name)
		if wok != gok || !reflect.DeepEqual(got, want) {
			t.Fatalf("Lock(%q): restored %+v, want %+v", name, got, want)
		}
	}
	if !reflect.DeepEqual(r.Sessions(), h.t.Sessions()) || r.Stats() != h.t.Stats() || r.Now() != h.t.Now() {
		t.Fatal("restored sessions, stats or clock differ")
	}
	d1, ok1 := h.t.NextDeadline()
	d2, ok2 := r.NextDeadline()
	if d1 != d2 || ok1 != ok2 || !ok1 {
		t.Fatalf("NextDeadline %d,%v vs %d,%v", d1, ok1, d2, ok2)
	}
	// Both go on identically: the lock-delays end, sessions close, locks move on.
	cmds := []Command{
		{Op: OpTick, Now: h.now + int64(10*time.Second)},
		{Op: OpCloseSession, Session: 1},
		{Op: OpExpireSession, Session: 3},
		{Op: OpAcquire, Session: 2, Name: "new", Now: h.now + int64(11*time.Second)},
	}
	for i, c := range cmds {
		pos := Position{Slot: h.slot + 1 + uint64(i)}
		want, got := h.t.Apply(pos, c), r.Apply(pos, c)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("command %d: restored table answered %+v, want %+v", i, got, want)
		}
	}
	if !bytes.Equal(h.t.Snapshot(), r.Snapshot()) {
		t.Fatal("tables diverged after the restore")
	}
}

func TestSnapshotOfEmptyTable(t *testing.T) {
	a, b := New(DefaultLimits()), New(DefaultLimits())
	if err := b.Restore(a.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Applied(); ok || !bytes.Equal(a.Snapshot(), b.Snapshot()) {
		t.Fatal("empty round trip")
	}
}

func TestRestoreIsAtomic(t *testing.T) {
	h := richTable(t)
	snap := h.t.Snapshot()
	target := New(DefaultLimits())
	target.Apply(Position{Slot: 1}, Command{Op: OpOpenSession, Client: 9, TTL: time.Minute})
	before := target.Snapshot()
	check := func(what string, b []byte) {
		t.Helper()
		err := target.Restore(b)
		if err == nil {
			t.Fatalf("%s: Restore accepted a damaged snapshot", what)
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
			t.Fatalf("%s: error %v wraps neither ErrMalformed nor ErrVersion", what, err)
		}
		if !bytes.Equal(target.Snapshot(), before) {
			t.Fatalf("%s: a failed Restore changed the table", what)
		}
	}
	for n := range len(snap) {
		check("truncated", snap[:n])
	}
	for i := range snap {
		b := bytes.Clone(snap)
		b[i] ^= 0x10
		check("bit flip", b)
	}
	check("trailing", append(bytes.Clone(snap), 0))
}

// reseal replaces the checksum of a snapshot after its body was edited.
func reseal(b []byte) []byte {
	body := b[:len(b)-4]
	return binary.LittleEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, castagnoli))
}

func TestRestoreRejectsStatesThatBreakAnInvariant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(t *Table)
		text    string
	}{
		{"idle lock", func(t *Table) {
			t.locks["idle"] = &lock{name: "idle"}
		}, `lock "idle" has no holder, no waiter and no lock-delay`},
		{"grantable first waiter", func(t *Table) {
			l := t.locks["excl"]
			l.holders = nil
		}, `first waiter that should have been granted`},
		{"two exclusive holders", func(t *Table) {
			l := t.locks["shared"]
			l.shared = false
		}, `mode does not fit 2 holders`},
		{"token above the last issued", func(t *Table) {
			t.lastToken = 2
		}, `above the last issued 2`},
		{"tokens out of grant order", func(t *Table) {
			l := t.locks["shared"]
			l.holders[0], l.holders[1] = l.holders[1], l.holders[0]
		}, `lock "shared": token`},
		{"holder of a dead session", func(t *Table) {
			delete(t.sessions, 2)
		}, `names session 2, which is not open`},
		{"session twice in one lock", func(t *Table) {
			l := t.locks["excl"]
			l.waiters = append(l.waiters, waiter{s: l.holders[0].s})
		}, `names session 1 twice`},
		{"session IDs above the last issued", func(t *Table) {
			t.lastSession = 1
		}, `above the last issued 1`},
		{"lock-delay in the past", func(t *Table) {
			t.now = t.locks["delayed"].delayUntil
		}, `lock-delay that ended before the clock`},
		{"grant after the clock", func(t *Table) {
			t.locks["excl"].holders[0].since = t.now + 1
		}, `after the clock`},
		{"invalid limits", func(t *Table) {
			t.limits.MaxWaitersPerLock = 0
		}, `Limits.MaxWaitersPerLock is 0`},
		{"position without a command", func(t *Table) {
			t.started = false
		}, `without any command applied`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := richTable(t)
			tc.corrupt(h.t)
			err := New(DefaultLimits()).Restore(h.t.Snapshot())
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Restore: %v, want an error saying %q", err, tc.text)
			}
		})
	}
}

func TestRestoreRejectsBadFraming(t *testing.T) {
	snap := New(DefaultLimits()).Snapshot()
	for _, tc := range []struct {
		name string
		in   []byte
		want error
		text string
	}{
		{"empty", nil, ErrMalformed, "not a lock table snapshot"},
		{"bad magic", append([]byte("XXXX"), snap[4:]...), ErrMalformed, "bad magic"},
		{"newer version", reseal(append(append([]byte(nil), snap[:4]...), append([]byte{3}, snap[5:]...)...)), ErrVersion, "snapshot version 3, this build reads 1 and 2: upgrade"},
		{"checksum", append(bytes.Clone(snap[:len(snap)-1]), snap[len(snap)-1]^1), ErrMalformed, "the snapshot is corrupt, fetch it again"},
		{"unknown flags", reseal(append(append(bytes.Clone(snap[:5]), 0x80), snap[6:]...)), ErrMalformed, "unknown flags 0x80"},
		{"trailing byte in body", reseal(append(bytes.Clone(snap[:len(snap)-4]), 0, 0, 0, 0, 0)), ErrMalformed, "1 trailing bytes"},
		{"huge count", reseal(append(bytes.Clone(snap[:len(snap)-6]), 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0)), ErrMalformed, "cannot fit"},
	} {
		err := New(DefaultLimits()).Restore(tc.in)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.want, tc.text)
		}
	}
}
