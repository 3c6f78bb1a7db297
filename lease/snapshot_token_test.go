package lease

import "testing"

// TestRestoreCarriesTokenCounterWithNoLockHeld: fencing tokens only grow, across a
// snapshot too. Restore checks the tokens of held locks against the counter it reads,
// so a counter lost on restore shows up there only while some lock is held. Here every
// lock was released before the snapshot, so only the next grant can tell: its token must
// be above every token issued before the snapshot, on the same name and on another.
func TestRestoreCarriesTokenCounterWithNoLockHeld(t *testing.T) {
	h := newHarness(t)
	s := h.open(1)
	var issued uint64
	for _, name := range []string{"a", "b", "a", "c"} {
		tok := h.mustGrant(s, name, false, 0)
		issued = max(issued, tok)
		if r := h.release(s, name, tok); r.Code != CodeOK {
			t.Fatalf("release %q token %d: %v", name, tok, r.Err())
		}
	}
	if st := h.t.Stats(); st.Holders != 0 || st.Locks != 0 || issued < 4 {
		t.Fatalf("before the snapshot: %+v, highest token %d; want no lock held and 4 tokens issued", st, issued)
	}

	snap := h.t.Snapshot()
	h.t = New(DefaultLimits())
	if err := h.t.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got := h.t.Stats().LastToken; got != issued {
		t.Errorf("restored table reports last token %d, want %d", got, issued)
	}
	for _, name := range []string{"a", "z"} {
		tok := h.mustGrant(s, name, false, 0)
		if tok <= issued {
			t.Fatalf("after restore, %q granted token %d, not above %d issued before the snapshot: the token counter was not restored", name, tok, issued)
		}
		issued = tok
	}
}

// Fencing tokens across a restore from a backup (lockd restore): OpRaiseTokenFloor
// lifts the counter, never lowers it, survives a snapshot, and every later grant is
// above the floor.
func TestRaiseTokenFloorOnlyRaisesAndHoldsAcrossSnapshots(t *testing.T) {
	h := newHarness(t)
	s := h.open(1)
	first := h.apply(Command{Op: OpAcquire, Session: s, Name: "a"}).Token
	if r := h.apply(Command{Op: OpRaiseTokenFloor, Token: 1_000_000}); r.Code != CodeOK {
		t.Fatalf("raise: %v", r.Err())
	}
	if r := h.apply(Command{Op: OpRaiseTokenFloor, Token: 10}); r.Code != CodeOK {
		t.Fatalf("lower raise: %v", r.Err())
	}
	restored := New(DefaultLimits())
	if err := restored.Restore(h.t.Snapshot()); err != nil {
		t.Fatal(err)
	}
	h.t = restored
	got := h.apply(Command{Op: OpAcquire, Session: s, Name: "b"}).Token
	if got != 1_000_001 {
		t.Fatalf("first grant after a floor of 1000000 (and a lower one of 10) took token %d, want 1000001 (the grant before had %d)", got, first)
	}
	if v := h.t.Validate("a", first); !v {
		t.Fatalf("the grant made before the floor lost its token %d", first)
	}
}
