package server

import "testing"

// TestIdentityInFlightSole: a proposal is its identity's only one when no
// other of the same identity is in flight on the node, in any group;
// other identities do not count, and an identity whose proposals all left
// is forgotten.
func TestIdentityInFlightSole(t *testing.T) {
	c := newIdentityInFlight()
	if !c.enter("a") {
		t.Fatal("a's first proposal is not sole")
	}
	if !c.enter("b") {
		t.Fatal("b's first proposal is not sole while only a has one in flight")
	}
	if c.enter("a") {
		t.Fatal("a's second proposal in flight is sole")
	}
	c.leave("a")
	if c.enter("a") {
		t.Fatal("a's proposal is sole while another of a's is still in flight")
	}
	c.leave("a")
	c.leave("a")
	if len(c.n) != 1 {
		t.Fatalf("%d identities kept after a's proposals all left, want 1 (b)", len(c.n))
	}
	if !c.enter("a") {
		t.Fatal("a's proposal is not sole after all of a's left")
	}
}
