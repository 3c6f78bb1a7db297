package lease

import (
	"bytes"
	"testing"
	"time"
)

// Freeze captures the table: commands applied after it change nothing of
// what Encode writes, which is exactly Snapshot at the moment of Freeze.
// Snapshots are encoded off the replica's goroutine on that promise.
func TestFreezeIsUntouchedByLaterCommands(t *testing.T) {
	h := richTable(t)
	want := h.t.Snapshot()
	f := h.t.Freeze()
	if got := f.Encode(); !bytes.Equal(got, want) {
		t.Fatal("Encode right after Freeze differs from Snapshot")
	}
	// Change everything a snapshot holds: sessions, holders, waiters,
	// metadata, delays, the clock and counters.
	e := h.open(9)
	h.mustGrant(e, "new", false, time.Second)
	h.apply(Command{Op: OpAcquire, Session: e, Name: "excl", Wait: true, Metadata: []byte("queued later")})
	h.advance(3 * time.Second)
	for _, s := range h.t.Sessions() {
		if s.ID != e {
			h.apply(Command{Op: OpCloseSession, Session: s.ID})
		}
	}
	if bytes.Equal(h.t.Snapshot(), want) {
		t.Fatal("the later commands changed nothing: the test proves nothing")
	}
	if got := f.Encode(); !bytes.Equal(got, want) {
		t.Fatal("a frozen table changed with commands applied after Freeze")
	}
	r := New(DefaultLimits())
	if err := r.Restore(f.Encode()); err != nil {
		t.Fatalf("the frozen snapshot does not restore: %v", err)
	}
}
