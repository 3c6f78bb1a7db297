package protomodel

import (
	"flag"
	"strings"
	"testing"
)

var big = flag.Bool("protomodel.big", false, "run the exhaustive checks with bigger bounds (minutes, gigabytes)")

// check runs one configuration and logs its figures.
func check(t testing.TB, cfg Config) *Result {
	t.Helper()
	r, err := Check(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", r)
	return r
}

// wantViolation asserts that cfg breaks invariant inv, and logs the trace.
func wantViolation(t *testing.T, cfg Config, inv string) *Violation {
	t.Helper()
	r := check(t, cfg)
	if r.Violation == nil {
		t.Fatalf("%v: no violation of %q found (complete=%v)", &r.Config, inv, r.Complete)
	}
	t.Logf("trace:\n%v", r.Violation)
	if r.Violation.Invariant != inv {
		t.Fatalf("%v: broke %q, want %q", &r.Config, r.Violation.Invariant, inv)
	}
	if n := len(r.Violation.Trace); n == 0 || strings.HasPrefix(r.Violation.Trace[n-1].Action, "(trace lost") {
		t.Fatalf("%v: the trace could not be replayed", &r.Config)
	}
	return r.Violation
}

// wantSafe asserts that cfg explores its whole bounded state space with no
// violation.
func wantSafe(t *testing.T, cfg Config) *Result {
	t.Helper()
	r := check(t, cfg)
	if r.Violation != nil {
		t.Fatalf("%v: unexpected violation:\n%v", &r.Config, r.Violation)
	}
	if !r.Complete {
		t.Fatalf("%v: state cap hit before the space was explored", &r.Config)
	}
	return r
}

// The old rule breaks the local commit invariant on every cluster size: a
// master at b that learns from a FetchReply that a slot where it proposed
// chose another value still announces a commit index past it.
func TestOldRuleBreaksCommitInvariant(t *testing.T) {
	for _, cfg := range []Config{
		{Nodes: 3, Owners: []int{0, 1}, Slots: 1},
		{Nodes: 5, Owners: []int{0, 2}, Slots: 1},
	} {
		cfg.Rule = RuleOld
		wantViolation(t, cfg, "commit")
	}
}

// The consequence: on 5 nodes, two nodes take different values for one slot.
// 5 nodes, 2 ballots and 1 slot is the smallest configuration that shows it
// (the Fetch of issue 8's schedule is here always outstanding, so the slot
// that made it necessary is not needed). On 3 and 4 nodes the old rule keeps
// agreement: any majority that chooses against the stale master holds every
// follower that accepted its value, which is why 3-node runs looked clean.
func TestOldRuleBreaksAgreementOnFiveNodes(t *testing.T) {
	cfg := Config{Nodes: 5, Owners: []int{0, 2}, Slots: 1, Rule: RuleOld, SkipCommitInvariant: true}
	v := wantViolation(t, cfg, "agreement")
	t.Logf("smallest failing configuration: %v, trace of %d steps", &cfg, len(v.Trace))
	for _, n := range []int{3, 4} {
		wantSafe(t, Config{Nodes: n, Owners: []int{0, 1}, Slots: 1, Rule: RuleOld, SkipCommitInvariant: true})
	}
}

// The shape of issue 8's first schedule: C owns two ballots around A's, two
// slots.
func TestOldRuleIssueShape(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s; the 1-slot configurations cover the flaw in -short")
	}
	wantViolation(t, Config{Nodes: 5, Owners: []int{2, 0, 2}, Slots: 2, Rule: RuleOld}, "commit")
}

// The new rule keeps every invariant in the whole bounded state space.
func TestNewRuleExhaustive(t *testing.T) {
	cfgs := []Config{
		{Nodes: 3, Owners: []int{0, 1, 0}, Slots: 1},
		{Nodes: 5, Owners: []int{0, 1}, Slots: 1},
	}
	if !testing.Short() {
		cfgs = append(cfgs, Config{Nodes: 3, Owners: []int{0, 1}, Slots: 2})
	}
	for _, cfg := range cfgs {
		cfg.Rule = RuleNew
		wantSafe(t, cfg)
	}
}

// Planted faults must each break an invariant: a checker that cannot fail
// proves nothing.
func TestCheckerBites(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		fault Fault
	}{
		{"AcceptIgnoresPromise", Config{Nodes: 3, Owners: []int{0, 1}, Slots: 1}, FaultAcceptIgnoresPromise},
		{"Phase2TakesOwnValue", Config{Nodes: 3, Owners: []int{0, 1}, Slots: 1}, FaultPhase2OwnValue},
		// A counts its b1 votes toward b3: the same value, but no majority
		// voted for it under one ballot.
		{"CountsEarlierBallot", Config{Nodes: 4, Owners: []int{0, 1, 0}, Slots: 1}, FaultCountEarlierBallot},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Rule, cfg.Faults, cfg.SkipCommitInvariant = RuleNew, tc.fault, true
			r := check(t, cfg)
			if r.Violation == nil {
				t.Fatalf("no violation with fault %s planted", tc.name)
			}
			t.Logf("trace:\n%v", r.Violation)
		})
	}
}

// Symmetry reduction must not change a verdict.
func TestSymmetryKeepsVerdicts(t *testing.T) {
	for _, cfg := range []Config{
		{Nodes: 4, Owners: []int{0, 1}, Slots: 1, Rule: RuleOld},
		{Nodes: 4, Owners: []int{0, 1}, Slots: 1, Rule: RuleNew},
	} {
		with := check(t, cfg)
		cfg.NoSymmetry = true
		without := check(t, cfg)
		if (with.Violation == nil) != (without.Violation == nil) || with.Complete != without.Complete {
			t.Fatalf("%v: symmetry reduction changed the verdict: %v vs %v", &cfg, with, without)
		}
		if with.Violation != nil && len(with.Violation.Trace) != len(without.Violation.Trace) {
			t.Fatalf("%v: shortest traces differ: %d vs %d steps", &cfg, len(with.Violation.Trace), len(without.Violation.Trace))
		}
		if with.States > without.States {
			t.Fatalf("%v: %d states with symmetry reduction, %d without", &cfg, with.States, without.States)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{Nodes: 0, Owners: []int{0}, Slots: 1},
		{Nodes: 3, Owners: nil, Slots: 1},
		{Nodes: 3, Owners: []int{3}, Slots: 1},
		{Nodes: 3, Owners: []int{0}, Slots: 0},
		{Nodes: 7, Owners: []int{0, 1, 2, 3}, Slots: 3},
	} {
		if _, err := Check(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestBig runs bigger bounds; enable with -protomodel.big. A configuration
// that hits its state cap is reported, not failed: no violation was found in
// the states explored.
func TestBig(t *testing.T) {
	if !*big {
		t.Skip("enable with -protomodel.big")
	}
	// The patch that compares ballots still lets a master announce a commit
	// index over a slot that chose against its own value (5 nodes; issue 8
	// shows agreement itself break on 7).
	wantViolation(t, Config{Nodes: 5, Owners: []int{3, 0, 2}, Slots: 1, Rule: RuleBallotCompare}, "commit")
	for _, cfg := range []Config{
		{Nodes: 3, Owners: []int{0, 1}, Slots: 2},
		{Nodes: 3, Owners: []int{0, 1, 2}, Slots: 1},
		{Nodes: 5, Owners: []int{0, 1}, Slots: 2},
		{Nodes: 5, Owners: []int{0, 1, 2}, Slots: 1},
		{Nodes: 3, Owners: []int{0, 1, 2}, Slots: 2},
		{Nodes: 5, Owners: []int{0, 1}, Slots: 1, Faults: FaultAckChosen, SkipCommitInvariant: true},
		{Nodes: 5, Owners: []int{0, 1, 2}, Slots: 1, Faults: FaultAckChosen, SkipCommitInvariant: true},
	} {
		cfg.Rule = RuleNew
		cfg.MaxStates = 30_000_000
		r := check(t, cfg)
		if r.Violation != nil {
			t.Errorf("%v:\n%v", &r.Config, r.Violation)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	cfg := Config{Nodes: 5, Owners: []int{0, 1}, Slots: 1, Rule: RuleNew}
	for b.Loop() {
		r, err := Check(cfg)
		if err != nil || r.Violation != nil || !r.Complete {
			b.Fatalf("%v %v", r, err)
		}
		b.ReportMetric(float64(r.States), "states")
	}
}
