package lease

import (
	"strings"
	"testing"
	"time"
)

func TestLimitsGiveClearErrors(t *testing.T) {
	small := DefaultLimits()
	small.MaxLocksPerSession = 2
	small.MaxSessionsPerClient = 1
	small.MaxWaitersPerLock = 1
	for _, tc := range []struct {
		name  string
		setup func(h *harness) Command // returns the command that must fail
		code  Code
		field string
		text  string
	}{
		{"name too long", func(h *harness) Command {
			return Command{Op: OpAcquire, Session: h.open(1), Name: strings.Repeat("n", 900)}
		}, CodeLimit, "MaxNameBytes", "lock name is 900 bytes, the limit is 512: use a shorter name"},
		{"empty name", func(h *harness) Command {
			return Command{Op: OpAcquire, Session: h.open(1)}
		}, CodeInvalid, "Name", "lock name is empty"},
		{"metadata too large", func(h *harness) Command {
			return Command{Op: OpAcquire, Session: h.open(1), Name: "x", Metadata: make([]byte, 5000)}
		}, CodeLimit, "MaxMetadataBytes", "metadata is 5000 bytes, the limit is 4096"},
		{"negative lock-delay", func(h *harness) Command {
			return Command{Op: OpAcquire, Session: h.open(1), Name: "x", LockDelay: -1}
		}, CodeInvalid, "LockDelay", "lock-delay -1ns is negative"},
		{"lock-delay too long", func(h *harness) Command {
			return Command{Op: OpAcquire, Session: h.open(1), Name: "x", LockDelay: time.Hour}
		}, CodeLimit, "MaxLockDelay", "lock-delay 1h0m0s is above the maximum 1m0s"},
		{"ttl too short", func(h *harness) Command {
			return Command{Op: OpOpenSession, Client: 1, TTL: time.Millisecond}
		}, CodeLimit, "MinTTL", "ttl 1ms is below the minimum 1s: ask for a longer ttl"},
		{"ttl too long", func(h *harness) Command {
			return Command{Op: OpOpenSession, Client: 1, TTL: 48 * time.Hour}
		}, CodeLimit, "MaxTTL", "ttl 48h0m0s is above the maximum 24h0m0s"},
		{"sessions per client", func(h *harness) Command {
			h.apply(Command{Op: OpSetLimits, Limits: small})
			h.open(7)
			h.open(8) // another client is not counted
			return Command{Op: OpOpenSession, Client: 7, TTL: time.Minute}
		}, CodeLimit, "MaxSessionsPerClient", "client 7 already has 1 open sessions, the limit"},
		{"locks per session count waits", func(h *harness) Command {
			h.apply(Command{Op: OpSetLimits, Limits: small})
			a, b := h.open(1), h.open(2)
			h.mustGrant(a, "x", false, 0)
			h.mustGrant(b, "y", false, 0)
			h.mustQueue(b, "x", false)
			return Command{Op: OpAcquire, Session: b, Name: "z"}
		}, CodeLimit, "MaxLocksPerSession", "the session holds or waits for 2 locks, the limit"},
		{"waiters per lock", func(h *harness) Command {
			h.apply(Command{Op: OpSetLimits, Limits: small})
			a, b, c := h.open(1), h.open(2), h.open(3)
			h.mustGrant(a, "x", false, 0)
			h.mustQueue(b, "x", false)
			return Command{Op: OpAcquire, Session: c, Name: "x", Wait: true}
		}, CodeLimit, "MaxWaitersPerLock", "1 requests already wait for the lock, the limit: retry later"},
		{"unknown session", func(h *harness) Command {
			return Command{Op: OpAcquire, Session: 5, Name: "x"}
		}, CodeSessionUnknown, "Session", "no session 5"},
		{"invalid limits", func(h *harness) Command {
			bad := DefaultLimits()
			bad.MaxTTL = time.Millisecond
			return Command{Op: OpSetLimits, Limits: bad}
		}, CodeInvalid, "Limits", "Limits.MaxTTL is 1ms, want 1s to 168h0m0s: the limits are unchanged"},
		{"unknown op", func(h *harness) Command {
			return Command{Op: 200}
		}, CodeInvalid, "Op", "unknown op 200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			c := tc.setup(h)
			before := h.t.Snapshot()
			r := h.apply(c)
			err := r.Err()
			if r.Code != tc.code || err == nil || CodeOf(err) != tc.code || r.err.Field != tc.field {
				t.Fatalf("code %v field %q err %v; want code %v field %q", r.Code, r.err.Field, err, tc.code, tc.field)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q does not say %q", err, tc.text)
			}
			if len(r.Events) != 0 || r.Token != 0 || r.Session != 0 {
				t.Fatalf("a refused command reported changes: %+v", r)
			}
			if err := sameButPositionAndClock(before, h.t); err != nil {
				t.Fatalf("a refused command changed the table: %v", err)
			}
		})
	}
}

func TestErrorNamesOpLockAndSession(t *testing.T) {
	h := newHarness(t)
	a := h.open(1)
	r := h.apply(Command{Op: OpAcquire, Session: a, Name: strings.Repeat("n", 600)})
	msg := r.Err().Error()
	if !strings.HasPrefix(msg, `lease: acquire "nnn`) || !strings.Contains(msg, "by session 1: lock name is 600 bytes") {
		t.Fatalf("error %q", msg)
	}
	if CodeOf(nil) != CodeOK || CodeOf(ErrMalformed) != CodeInvalid {
		t.Fatal("CodeOf")
	}
}

func TestLimitsValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		field string
		set   func(*Limits)
		want  string
	}{
		{"MaxNameBytes", func(l *Limits) { l.MaxNameBytes = 0 }, "Limits.MaxNameBytes is 0, want 1 to 4096"},
		{"MaxNameBytes", func(l *Limits) { l.MaxNameBytes = NameBytesCeiling + 1 }, "Limits.MaxNameBytes is 4097"},
		{"MaxMetadataBytes", func(l *Limits) { l.MaxMetadataBytes = -1 }, "Limits.MaxMetadataBytes is -1"},
		{"MaxLocksPerSession", func(l *Limits) { l.MaxLocksPerSession = 0 }, "Limits.MaxLocksPerSession is 0"},
		{"MaxSessionsPerClient", func(l *Limits) { l.MaxSessionsPerClient = CountCeiling + 1 }, "Limits.MaxSessionsPerClient"},
		{"MaxWaitersPerLock", func(l *Limits) { l.MaxWaitersPerLock = 0 }, "Limits.MaxWaitersPerLock is 0"},
		{"MinTTL", func(l *Limits) { l.MinTTL = 0 }, "Limits.MinTTL is 0s, want 1ms to 168h0m0s"},
		{"MaxTTL", func(l *Limits) { l.MaxTTL = l.MinTTL - 1 }, "Limits.MaxTTL is 999.999999ms, want 1s to"},
		{"MaxLockDelay", func(l *Limits) { l.MaxLockDelay = 2 * time.Hour }, "Limits.MaxLockDelay is 2h0m0s, want 0s to 1h0m0s"},
	} {
		l := DefaultLimits()
		tc.set(&l)
		err := l.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want %q", tc.field, err, tc.want)
		}
	}
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("DefaultLimits invalid: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted invalid limits")
		}
	}()
	New(Limits{})
}

func TestSetLimitsIsReplicatedState(t *testing.T) {
	h := newHarness(t)
	l := DefaultLimits()
	l.MaxNameBytes = 4
	if r := h.apply(Command{Op: OpSetLimits, Limits: l}); r.Code != CodeOK {
		t.Fatal(r.Err())
	}
	a := h.open(1)
	if r := h.acquire(a, "12345", false, false, 0); r.Code != CodeLimit {
		t.Fatalf("new limit not applied: %v", r.Code)
	}
	other := New(DefaultLimits()) // a replica configured differently
	if err := other.Restore(h.t.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if other.Limits() != l {
		t.Fatalf("Restore did not take the snapshot's limits: %+v", other.Limits())
	}
}
