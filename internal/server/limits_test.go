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
