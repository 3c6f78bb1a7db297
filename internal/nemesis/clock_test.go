package nemesis

import "testing"

// A clock fault beyond the drift margin excuses exactly the checkers that
// rely on clock rates (wall-clock mutual exclusion, linearizability, kept);
// fencing, tokens, lost and availability stay judged. Within the margin
// nothing is excused.
func TestClockFaultExcuses(t *testing.T) {
	beyond := Schedule{{Kind: "clock", Arg: "2x1.5"}}
	ex, why := excusedCheckers(beyond)
	if ex == nil || why == "" {
		t.Fatal("a clock 50% fast excuses nothing")
	}
	for v, want := range map[string]bool{
		"mutual exclusion: a: token 3 (worker 1) wrote over [x, y] and token 4 (worker 2) over [x, y]: the holders overlap in time": true,
		"linearizability: the history of 9 operations is not linearizable for the fenced-lock model; visualization: v":              true,
		"kept: worker 1 holds a with token 3 (session 2), acknowledged and kept alive, but the master lists holders []":             true,
		"mutual exclusion: a: the resource accepted token 4 (worker 2) between writes of token 3 (worker 1, shared=false)":          false,
		"tokens: a: the watch stream granted token 3 (session 1) after token 4 (session 2)":                                         false,
		"lost: a was granted (token 5) to session 2 after the stream reported that session expired (token 4)":                       false,
		"availability: worker 1's reads did not succeed after the faults healed: x":                                                 false,
	} {
		if got := ex[checkerOf(v)]; got != want {
			t.Errorf("excused(%q) = %v, want %v", v, got, want)
		}
	}
	if ex, _ := excusedCheckers(Schedule{{Kind: "clock", Arg: "3x1.02"}, {Kind: "kill", Arg: "1"}}); ex != nil {
		t.Errorf("a clock within the margin excuses %v", ex)
	}
	if n, rate, ok := clockFault(Fault{Kind: "clock", Arg: "3x0.7"}); !ok || n != 3 || rate != 0.7 {
		t.Errorf("clock fault 3x0.7 parsed as %d, %v, %v", n, rate, ok)
	}
}
