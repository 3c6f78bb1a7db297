package protomodel

import "testing"

type valueID struct{ ballot, n uint64 }

func TestCommitAllowed(t *testing.T) {
	chosen := map[uint64]valueID{0: {1, 1}, 1: {3, 1}}
	known := func(s uint64) (valueID, bool) { v, ok := chosen[s]; return v, ok }
	// A master at ballot 2 proposed {2,1} at slot 1, but {3,1} was chosen.
	proposed := map[uint64]valueID{1: {2, 1}, 2: {2, 2}}
	if err := CommitAllowed(proposed, known, 1); err != nil {
		t.Errorf("commit 1 covers no slot it proposed: %v", err)
	}
	if err := CommitAllowed(proposed, known, 2); err == nil {
		t.Error("commit 2 covers slot 1, where another value was chosen: allowed")
	} else {
		t.Log(err)
	}
	if err := CommitAllowed(proposed, known, 3); err == nil {
		t.Error("commit 3 covers slot 2, not known chosen: allowed")
	}
	own := map[uint64]valueID{1: {3, 1}}
	if err := CommitAllowed(own, known, 2); err != nil {
		t.Errorf("own value chosen: %v", err)
	}
}

func TestMustStepDown(t *testing.T) {
	proposed := map[uint64]valueID{1: {2, 1}}
	if !MustStepDown(proposed, 1, valueID{3, 1}) {
		t.Error("another value chosen where we proposed: no step down")
	}
	if MustStepDown(proposed, 1, valueID{2, 1}) {
		t.Error("our value chosen: step down")
	}
	if MustStepDown(proposed, 0, valueID{1, 7}) {
		t.Error("a slot we did not propose at: step down")
	}
}

func TestMayTakeByBallot(t *testing.T) {
	type ballot struct{ round, node uint64 }
	b := ballot{2, 1}
	if !MayTakeByBallot(0, 1, b, b, false) {
		t.Error("entry under the master's ballot below the commit index: refused")
	}
	if MayTakeByBallot(1, 1, b, b, false) {
		t.Error("slot at the commit index: taken")
	}
	if MayTakeByBallot(0, 1, ballot{1, 7}, b, false) {
		t.Error("entry under another ballot: taken")
	}
	if !MayTakeByBallot(0, 1, ballot{1, 7}, b, true) {
		t.Error("entry already marked chosen: refused")
	}
}
