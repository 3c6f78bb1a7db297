//go:build unix

package nemesis

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// The tests below show that each checker bites: a planted fault (in the
// resource, the history or a worker, never in lockd) makes it report.

func hasPrefix(bad []string, prefix string) bool {
	for _, b := range bad {
		if strings.HasPrefix(b, prefix) {
			return true
		}
	}
	return false
}

func TestMutexCheckerBites(t *testing.T) {
	for _, broken := range []bool{false, true} {
		r := &Resource{AcceptLower: broken}
		r.Write(Write{Name: "a", Token: 5, W: 1, Cts: 1})
		r.Write(Write{Name: "a", Token: 7, W: 2, Cts: 2})
		r.Write(Write{Name: "a", Token: 5, W: 1, Cts: 3, Stale: true}) // a paused old holder
		bad := CheckMutex(r.Log(), func(w Write) bool { return !w.Stale })
		if broken != hasPrefix(bad, "mutual exclusion") {
			t.Errorf("resource accepting lower tokens=%v: violations %q", broken, bad)
		}
	}
	// Client timestamps: two exclusive holders that believed they held
	// the lock at overlapping times.
	log := []Write{
		{Name: "a", Token: 5, W: 1, Cts: 10, Accepted: true},
		{Name: "a", Token: 5, W: 1, Cts: 30, Accepted: true},
		{Name: "a", Token: 7, W: 2, Cts: 20, Accepted: true},
	}
	if bad := CheckMutex(log, nil); !hasPrefix(bad, "mutual exclusion") {
		t.Errorf("overlapping client timestamps not reported: %q", bad)
	}
	// Shared holders may overlap.
	for i := range log {
		log[i].Shared = true
	}
	if bad := CheckMutex(log, nil); len(bad) != 0 {
		t.Errorf("shared holders reported: %q", bad)
	}
}

func TestTokenCheckerBites(t *testing.T) {
	ok := []Rec{
		{T: "op", Op: "acquire", W: 1, Name: "a", Sid: 1, Token: 7, Res: "ok", Call: 1, Ret: 10},
		{T: "op", Op: "try", W: 2, Name: "a", Sid: 2, Token: 9, Res: "ok", Call: 20, Ret: 30},
	}
	if bad := CheckTokens(ok, nil); len(bad) != 0 {
		t.Fatalf("increasing tokens reported: %q", bad)
	}
	lower := append([]Rec(nil), ok...)
	lower[1].Token = 6
	if bad := CheckTokens(lower, nil); !hasPrefix(bad, "tokens") {
		t.Errorf("a later grant with a lower token not reported: %q", bad)
	}
	ev := []Event{{Name: "a", Kind: "granted", Sid: 1, Token: 7}, {Name: "a", Kind: "granted", Sid: 2, Token: 7}}
	if bad := CheckTokens(nil, ev); !hasPrefix(bad, "tokens") {
		t.Errorf("one token granted twice not reported: %q", bad)
	}
}

func TestLinearizabilityCheckerBites(t *testing.T) {
	dir := t.TempDir()
	ops := []Rec{
		{T: "op", Op: "acquire", W: 1, Name: "a", Sid: 1, Token: 5, Res: "ok", Call: 0, Ret: 10},
		{T: "op", Op: "acquire", W: 2, Name: "a", Sid: 2, Token: 6, Res: "ok", Call: 20, Ret: 30},
	}
	// Legal once session 1's expiry (from the stream) comes between.
	legal := []Event{{Name: "a", Kind: "expired", Sid: 1, Token: 5, At: 15}}
	if bad, _, unknown := CheckLinearizable(BuildHistory(ops, legal), dir, time.Minute); len(bad) != 0 || unknown {
		t.Fatalf("a legal history reported: %q (unknown %v)", bad, unknown)
	}
	// Without it, two exclusive holders at once: not linearizable.
	bad, vis, _ := CheckLinearizable(BuildHistory(ops, nil), dir, time.Minute)
	if !hasPrefix(bad, "linearizability") {
		t.Fatalf("two holders at once not reported: %q", bad)
	}
	if _, err := os.Stat(vis); err != nil {
		t.Errorf("no visualization at %q: %v", vis, err)
	}
	// A grant to the expired session is not linearizable either.
	late := append(ops[:1:1], Rec{T: "op", Op: "acquire", W: 1, Name: "a", Sid: 1, Token: 8, Res: "ok", Call: 40, Ret: 50})
	if bad, _, _ := CheckLinearizable(BuildHistory(late, legal), dir, time.Minute); !hasPrefix(bad, "linearizability") {
		t.Errorf("a grant to an expired session not reported: %q", bad)
	}
	// A release by a session that does not hold the lock.
	rel := append(ops[:1:1], Rec{T: "op", Op: "release", W: 2, Name: "a", Sid: 2, Token: 5, Res: "ok", Call: 40, Ret: 50})
	if bad, _, _ := CheckLinearizable(BuildHistory(rel, nil), dir, time.Minute); !hasPrefix(bad, "linearizability") {
		t.Errorf("a release by another session not reported: %q", bad)
	}
}

// TestAbandonedWaitGrant is the history of seed 1294 (beta, 3 nodes, the
// master isolated) cut down: worker 1's blocking acquire for session 1
// timed out and its wait could not be cancelled, so it stayed queued and
// was granted (token 20) when session 2 released token 15; node 2 then
// answered worker 2's try "held exclusive by session 1 (token 20)"; the
// watcher, cut off meanwhile, received the release and the grant only
// later, and worker 1's next acquire returned the token its session already
// held. That acquire was called after the watcher received the grant, so
// the grant's interval must start at the timed-out acquire's call, not at
// the call of the acquire that returned its token.
func TestAbandonedWaitGrant(t *testing.T) {
	dir := t.TempDir()
	ops := []Rec{
		{T: "op", Op: "acquire", W: 2, Name: "beta", Sid: 2, Token: 15, Res: "ok", Call: 3487, Ret: 3781},
		{T: "op", Op: "release", W: 2, Name: "beta", Sid: 2, Token: 15, Res: "ok", Call: 8291, Ret: 11328},
		{T: "op", Op: "try", W: 2, Name: "beta", Sid: 2, Res: "held", Call: 11328, Ret: 11354},
		{T: "op", Op: "acquire", W: 1, Name: "beta", Sid: 1, Res: "unknown", Call: 4721, Ret: Infinity},
		{T: "op", Op: "acquire", W: 1, Name: "beta", Sid: 1, Token: 20, Res: "ok", Call: 13268, Ret: 13281},
		{T: "op", Op: "release", W: 1, Name: "beta", Sid: 1, Token: 20, Res: "ok", Call: 14241, Ret: 14261},
	}
	events := []Event{
		{Name: "beta", Kind: "granted", Sid: 2, Token: 15, At: 3780},
		{Name: "beta", Kind: "released", Sid: 2, Token: 15, At: 12105},
		{Name: "beta", Kind: "granted", Sid: 1, Token: 20, At: 12105},
		{Name: "beta", Kind: "released", Sid: 1, Token: 20, At: 14265},
	}
	if bad, _, unknown := CheckLinearizable(BuildHistory(ops, events), dir, time.Minute); len(bad) != 0 || unknown {
		t.Errorf("a grant of an abandoned wait reported: %q (unknown %v)", bad, unknown)
	}
	// Without the timed-out acquire nothing explains "held" at 11.33: the
	// only other holder's grant is first seen returned at 13.27.
	known := append(ops[:3:3], ops[4:]...)
	if bad, _, _ := CheckLinearizable(BuildHistory(known, events), dir, time.Minute); !hasPrefix(bad, "linearizability") {
		t.Errorf("a try answered held with no other holder not reported: %q", bad)
	}
}

func TestKeptCheckerBites(t *testing.T) {
	held := []Rec{{T: "held", W: 1, Name: "a", Sid: 3, Token: 9}}
	final := []Rec{{T: "final", W: 1, Name: "a", Sid: 3, Token: 9, Res: "ok"}}
	status := map[string][]Holder{"a": {{Sid: 3, Token: 9}}}
	if bad := CheckKept(held, status, final); len(bad) != 0 {
		t.Fatalf("a kept lock reported: %q", bad)
	}
	if bad := CheckKept(held, map[string][]Holder{"a": {{Sid: 4, Token: 10}}}, final); !hasPrefix(bad, "kept") {
		t.Errorf("a lost acknowledged lock not reported: %q", bad)
	}
	final[0].Res = "lost"
	if bad := CheckKept(held, status, final); !hasPrefix(bad, "kept") {
		t.Errorf("a kept-alive session told lost not reported: %q", bad)
	}
}

func TestLostCheckerBites(t *testing.T) {
	g := func(n string) uint32 { return wire.GroupOf(n, groups) }
	renew := []Rec{{T: "op", Op: "renew", W: 1, Name: "a", Sid: 1, Token: 5, Res: "ok", LostBefore: true, Call: 1, Ret: 2}}
	if bad := CheckLost(renew, nil, g); !hasPrefix(bad, "lost") {
		t.Errorf("a renew ok after Lost not reported: %q", bad)
	}
	ev := []Event{{Name: "a", Kind: "expired", Sid: 1, Token: 5, At: 10}, {Name: "a", Kind: "granted", Sid: 1, Token: 8, At: 20}}
	if bad := CheckLost(nil, ev, g); !hasPrefix(bad, "lost") {
		t.Errorf("a grant to an expired session in the stream not reported: %q", bad)
	}
	acq := []Rec{{T: "op", Op: "acquire", W: 1, Name: "a", Sid: 1, Token: 8, Res: "ok", Call: 15, Ret: 16}}
	if bad := CheckLost(acq, ev[:1], g); !hasPrefix(bad, "lost") {
		t.Errorf("an acquire granted to an expired session not reported: %q", bad)
	}
}

func TestScheduleRoundTrip(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		s := makeSchedule(seed, 3+2*int(seed%2), 20*time.Second)
		p, err := parseSchedule(s.String())
		if err != nil || p.String() != s.String() {
			t.Fatalf("seed %d: %q parsed as %q (%v)", seed, s, p, err)
		}
		for _, f := range s {
			if f.Kind == "clock" {
				// The whole run, from the nodes' start.
				if f.Start != 0 || f.Dur != 0 {
					t.Errorf("seed %d: clock fault %s, want @0s+0s", seed, f)
				}
				continue
			}
			if f.Start+f.Dur > 16*time.Second || f.Start < 2*time.Second {
				t.Errorf("seed %d: fault %s outside [2s, 16s]", seed, f)
			}
		}
	}
}

// TestNemesisBites runs the real cluster with every planted fault at once
// (the resource accepts lower tokens and workers write their previous token
// after a new grant; workers report a renew as ok after Lost; the history
// records a later acquire with a lower token and a grant to an expired
// session; the master's status loses a held lock; availability has a bound
// of 0) and checks that each checker reports its own.
func TestNemesisBites(t *testing.T) {
	if testing.Short() {
		t.Skip("a real run; -short skips it")
	}
	br := breaks{acceptLower: true, renewAfterLost: true, lowerToken: true, expiredGrant: true, dropHeldAtFinal: true, slowAvail: true}
	sched := Schedule{{Kind: "stopclient", Arg: "c1", Start: 2 * time.Second, Dur: sessionTTL + time.Second}}
	r := runOnce(t, 7, 3, 12*time.Second, sched, br)
	for _, want := range []string{"mutual exclusion", "tokens", "linearizability", "lost", "availability"} {
		if !hasPrefix(r.violations, want) {
			t.Errorf("planted faults: the %q checker did not report (violations: %q)", want, r.violations)
		}
	}
	t.Logf("%d violations reported, e.g. %q", len(r.violations), first(r.violations, 6))
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
