package paxos

import (
	"strings"
	"testing"
)

// TestSimulatorCatchesBrokenRules switches on deliberately broken acceptor and
// proposer rules and asserts that the simulator finds a violation within a
// bounded number of seeds. A checker that cannot fail proves nothing.
func TestSimulatorCatchesBrokenRules(t *testing.T) {
	cases := []struct {
		name string
		mut  mutation
		// only runs this configuration; by default seeds cycle through all.
		only *simConfig
		// want is a part of the violation the simulator must report.
		want string
	}{
		{"AcceptDoesNotRaisePromise", mutAcceptNoRaise, nil, ""},
		{"AcceptIgnoresPromise", mutAcceptIgnorePromise, nil, ""},
		{"Phase2TakesOwnValueNotHighestAccepted", mutPhase2OwnValue, nil, ""},
		{"ReplyBeforeSync", mutReplyBeforeSync, nil, ""},
		// The rule before issue 8: random faults almost never build its
		// precondition, the stale-master adversary does, and the commit
		// rule fires at the master's first bad announcement, long before a
		// follower could apply a wrong value.
		{"MasterKeepsLostSlot", mutMasterKeepsLostSlot, &staleMaster, "COMMIT RULE"},
		// Membership (issue 11): a master counts every quorum against the
		// configuration it prepared under, across a change it learns of.
		{"QuorumOfPrepareConfig", mutPrepareConfQuorum, &membersStale, "QUORUM"},
		// A master proposes in slots whose configuration is not known yet
		// (no alpha delay: a change governs at once).
		{"NoChangeDelay", mutNoChangeDelay, &membersPlain, "before the slot's configuration"},
	}
	const maxSeeds = 300
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed := int64(1); seed <= maxSeeds; seed++ {
				cfg := simConfigFor(seed)
				if tc.only != nil {
					cfg = *tc.only
				}
				cfg.mutate = tc.mut
				err := newSim(seed, cfg).run()
				if err == nil {
					continue
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("seed %d (%s): want a violation naming %q, got: %v", seed, cfg.name, tc.want, err)
				}
				t.Logf("found after %d seeds (%s): %v", seed, cfg.name, err)
				return
			}
			t.Fatalf("the simulator found no violation in %d seeds with rule %q broken", maxSeeds, tc.name)
		})
	}
}
