package server

import "testing"

// TestEnterProposalSole: a proposal is its identity's only one when no
// other of the same identity is in flight on the node, in any group;
// another identity's proposals do not count.
func TestEnterProposalSole(t *testing.T) {
	var ids identities
	a, b := ids.get("a"), ids.get("b")
	if !a.enterProposal() {
		t.Fatal("a's first proposal is not sole")
	}
	if !b.enterProposal() {
		t.Fatal("b's first proposal is not sole while only a has one in flight")
	}
	if a.enterProposal() {
		t.Fatal("a's second proposal in flight is sole")
	}
	a.leaveProposal()
	if a.enterProposal() {
		t.Fatal("a's proposal is sole while another of a's is still in flight")
	}
	a.leaveProposal()
	a.leaveProposal()
	if !ids.get("a").enterProposal() {
		t.Fatal("a's proposal is not sole after all of a's left")
	}
}

// TestProposeKind: only a light identity's sole command goes ahead, and it
// is contended only when more than aheadInFlight commands of others are in
// flight on the node: one other light client does not make the node yield.
func TestProposeKind(t *testing.T) {
	for _, c := range []struct {
		ahead, sole bool
		others      int
		want        int
	}{
		{false, true, 0, proposeQueued},
		{true, false, 0, proposeQueued},
		{false, false, 50, proposeQueued},
		{true, false, 50, proposeQueued},
		{true, true, 0, proposeAhead},
		{true, true, aheadInFlight, proposeAhead},
		{true, true, aheadInFlight + 1, proposeContended},
		{true, true, 50, proposeContended},
	} {
		if got := proposeKind(c.ahead, c.sole, c.others); got != c.want {
			t.Errorf("proposeKind(ahead %v, sole %v, others %d) = %d, want %d", c.ahead, c.sole, c.others, got, c.want)
		}
	}
}
