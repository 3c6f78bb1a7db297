package paxos

import "testing"

// TestSimulatorCatchesBrokenRules switches on deliberately broken acceptor and
// proposer rules and asserts that the simulator finds a violation within a
// bounded number of seeds. A checker that cannot fail proves nothing.
func TestSimulatorCatchesBrokenRules(t *testing.T) {
	cases := []struct {
		name string
		mut  mutation
	}{
		{"AcceptDoesNotRaisePromise", mutAcceptNoRaise},
		{"AcceptIgnoresPromise", mutAcceptIgnorePromise},
		{"Phase2TakesOwnValueNotHighestAccepted", mutPhase2OwnValue},
		{"ReplyBeforeSync", mutReplyBeforeSync},
	}
	const maxSeeds = 200
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed := int64(1); seed <= maxSeeds; seed++ {
				cfg := simConfigFor(seed)
				cfg.mutate = tc.mut
				if err := newSim(seed, cfg).run(); err != nil {
					t.Logf("found after %d seeds (%s): %v", seed, cfg.name, err)
					return
				}
			}
			t.Fatalf("the simulator found no violation in %d seeds with rule %q broken", maxSeeds, tc.name)
		})
	}
}
