package lease

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// ownerTable applies commands at increasing positions.
type ownerTable struct {
	t    *testing.T
	tab  *Table
	slot uint64
	tot  map[string]OwnerCounts
}

func newOwnerTable(t *testing.T) *ownerTable {
	o := &ownerTable{t: t, tab: New(DefaultLimits()), tot: map[string]OwnerCounts{}}
	o.tab.SetOwnerHook(func(owner string, d OwnerCounts) {
		c := o.tot[owner]
		c.Sessions += d.Sessions
		c.Held += d.Held
		c.Waiting += d.Waiting
		o.tot[owner] = c
	})
	return o
}

func (o *ownerTable) apply(c Command) Result {
	o.slot++
	c.Now = int64(o.slot)
	return o.tab.Apply(Position{Slot: o.slot}, c)
}

func TestSessionOwnership(t *testing.T) {
	o := newOwnerTable(t)
	a := o.apply(Command{Op: OpOpenSession, Client: 1, TTL: time.Minute, Caller: "svc-a"}).Session
	b := o.apply(Command{Op: OpOpenSession, Client: 2, TTL: time.Minute, Caller: "svc-b"}).Session
	if r := o.apply(Command{Op: OpAcquire, Session: a, Name: "x", Caller: "svc-a"}); r.Code != CodeOK {
		t.Fatalf("owner acquire: %v", r.Err())
	}
	if r := o.apply(Command{Op: OpAcquire, Session: b, Name: "x", Wait: true, Caller: "svc-b"}); r.Code != CodeQueued {
		t.Fatalf("svc-b queue: %v", r.Err())
	}
	before := o.tab.Snapshot()
	tok := o.tab.locks["x"].holders[0].token
	for _, c := range []Command{
		{Op: OpAcquire, Session: a, Name: "y"},
		{Op: OpRelease, Session: a, Name: "x", Token: tok},
		{Op: OpCloseSession, Session: a},
		{Op: OpCancelWait, Session: b, Name: "x", Caller: "svc-a"},
		{Op: OpAcquire, Session: a, Name: "z", Caller: "svc-b", Admin: true}, // admin does not acquire for others
	} {
		if c.Caller == "" {
			c.Caller = "svc-b"
		}
		r := o.apply(c)
		if r.Code != CodePermission {
			t.Fatalf("%v by %s: code %v, want permission", c.Op, c.Caller, r.Code)
		}
		var e *Error
		if !errors.As(r.Err(), &e) || !strings.Contains(e.Error(), "belongs to svc-") || !strings.Contains(e.Error(), "; you are ") {
			t.Fatalf("%v: error %v", c.Op, r.Err())
		}
	}
	// Nothing changed but the clock and position.
	o.apply(Command{Op: OpTick})
	if info, _ := o.tab.Lock("x"); len(info.Holders) != 1 || info.Holders[0].Session != a || info.Waiters != 1 {
		t.Fatalf("lock x changed: %+v (snapshot before %d bytes)", info, len(before))
	}
	if got := o.tot["svc-a"]; got != (OwnerCounts{Sessions: 1, Held: 1}) {
		t.Fatalf("svc-a counts %+v", got)
	}
	if got := o.tot["svc-b"]; got != (OwnerCounts{Sessions: 1, Waiting: 1}) {
		t.Fatalf("svc-b counts %+v", got)
	}
	// An admin may release and close another's session.
	if r := o.apply(Command{Op: OpRelease, Session: a, Name: "x", Token: tok, Caller: "ops", Admin: true}); r.Code != CodeOK {
		t.Fatalf("admin release: %v", r.Err())
	}
	if got := o.tot["svc-b"]; got != (OwnerCounts{Sessions: 1, Held: 1}) {
		t.Fatalf("svc-b counts after grant %+v", got)
	}
	if r := o.apply(Command{Op: OpCloseSession, Session: b, Caller: "ops", Admin: true}); r.Code != CodeOK {
		t.Fatalf("admin close: %v", r.Err())
	}
	if got := o.tot["svc-b"]; got != (OwnerCounts{}) {
		t.Fatalf("svc-b counts after close %+v", got)
	}
	if si, _ := o.tab.Session(a); si.Owner != "svc-a" {
		t.Fatalf("owner %q", si.Owner)
	}
}

func TestOwnerSurvivesSnapshotAndCommandCodec(t *testing.T) {
	o := newOwnerTable(t)
	a := o.apply(Command{Op: OpOpenSession, Client: 1, TTL: time.Minute, Caller: "svc-a"}).Session
	o.apply(Command{Op: OpAcquire, Session: a, Name: "x", Caller: "svc-a"})
	n := newOwnerTable(t)
	n.slot = o.slot
	if err := n.tab.Restore(o.tab.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if si, _ := n.tab.Session(a); si.Owner != "svc-a" {
		t.Fatalf("restored owner %q", si.Owner)
	}
	if got := n.tot["svc-a"]; got != (OwnerCounts{Sessions: 1, Held: 1}) {
		t.Fatalf("restored counts %+v", got)
	}
	if r := n.apply(Command{Op: OpCloseSession, Session: a, Caller: "svc-b"}); r.Code != CodePermission {
		t.Fatalf("after restore: %v", r.Code)
	}
	// A version-1 snapshot (before owners) still restores, with no owner.
	v1 := newOwnerTable(t)
	if err := v1.tab.Restore(o.tab.snapshot(snapshotVersionNoOwner)); err != nil {
		t.Fatal(err)
	}
	if si, ok := v1.tab.Session(a); !ok || si.Owner != "" {
		t.Fatalf("v1 session %+v %v", si, ok)
	}
	for _, c := range []Command{
		{Op: OpOpenSession, Client: 9, TTL: time.Second, Caller: "svc-a"},
		{Op: OpCloseSession, Session: 3, Caller: "ops", Admin: true},
		{Op: OpRelease, Session: 3, Name: "n", Token: 4, Caller: "x"},
	} {
		got, err := DecodeCommand(c.Encode())
		if err != nil || got.Caller != c.Caller || got.Admin != c.Admin {
			t.Fatalf("%+v: decoded %+v, %v", c, got, err)
		}
	}
	if b := (Command{Op: OpTick}).Encode(); b[0] != commandVersion {
		t.Fatalf("a command without caller is version %d", b[0])
	}
	bad := append(Command{Op: OpCloseSession, Session: 3, Caller: "a"}.Encode()[:4], 0, 0) // empty caller, no admin
	if _, err := DecodeCommand(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("non-canonical caller: %v", err)
	}
}
