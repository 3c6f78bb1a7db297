package protomodel

import (
	"fmt"
	"slices"
)

// The predicates below state the learning rules of issue 8 over the caller's
// own types, so that the core's simulator (or a unit test of the core) can
// assert them on every step without this package importing paxos. V is the
// type that identifies a value (paxos.ValueID), B the ballot type
// (paxos.Ballot).

// CommitAllowed checks the local invariant that RuleNew rests on, at the
// moment a master announces commit index commit under its current ballot (in
// a Commit heartbeat or on an Accept): for every slot below commit where the
// master proposed a value under that ballot (proposed, by slot), the value it
// knows as chosen there (chosen) must be the value it proposed. A follower
// that takes an entry accepted under the master's ballot as chosen for a slot
// below the commit index is right exactly when this holds. It returns nil, or
// an error naming the first slot that breaks it.
func CommitAllowed[V comparable](proposed map[uint64]V, chosen func(slot uint64) (V, bool), commit uint64) error {
	slots := make([]uint64, 0, len(proposed))
	for s := range proposed {
		if s < commit {
			slots = append(slots, s)
		}
	}
	slices.Sort(slots)
	for _, s := range slots {
		v, ok := chosen(s)
		if !ok {
			return fmt.Errorf("protomodel: commit index %d announced, but slot %d is not known as chosen", commit, s)
		}
		if v != proposed[s] {
			return fmt.Errorf("protomodel: commit index %d announced under a ballot that proposed %v at slot %d, where %v was chosen", commit, proposed[s], s, v)
		}
	}
	return nil
}

// MustStepDown is RuleNew: a master that learns (by any path) that slot chose
// v must step down at once if it proposed another value there under its
// current ballot (proposed, by slot). A ballot comparison is not a substitute:
// a chosen entry can carry an older ballot than the one it was chosen under.
func MustStepDown[V comparable](proposed map[uint64]V, slot uint64, v V) bool {
	p, ok := proposed[slot]
	return ok && p != v
}

// MayTakeByBallot is the learning-by-ballot rule of a follower that receives
// commit index commit from a master at ballot master: it may take its entry
// for slot (accepted under entryBallot, or already marked chosen) as the
// chosen value only if slot < commit and the entry is marked chosen or was
// accepted under the master's own ballot. Any other slot below commit must be
// fetched. It is safe only together with CommitAllowed on the master's side.
func MayTakeByBallot[B comparable](slot, commit uint64, entryBallot, master B, entryChosen bool) bool {
	return slot < commit && (entryChosen || entryBallot == master)
}
