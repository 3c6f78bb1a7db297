package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
)

// startCluster starts a 3-node local cluster for a test and waits for
// masters.
func startCluster(t *testing.T, opts localcluster.Options) *localcluster.Cluster {
	t.Helper()
	c, err := localcluster.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitForMasters(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func runShort(t *testing.T, c *localcluster.Cluster, o Options) *Result {
	t.Helper()
	o.Cluster = c
	if testing.Verbose() {
		o.Progress = os.Stderr
	}
	r, err := Run(context.Background(), o)
	// A machine busy with other work may finish no op in a short window
	// (seen at load 15: 36 proposals, none inside the 1.5s measured). The
	// tests check that the workload runs, not its rate: give it longer.
	for i := 0; err == nil && r.Ops == 0 && i < 3; i++ {
		o.Duration *= 4
		t.Logf("%s: no op completed in the window; again with %v", o.Workload, o.Duration)
		r, err = Run(context.Background(), o)
	}
	if err != nil {
		t.Fatalf("%s: %v", o.Workload, err)
	}
	if testing.Verbose() {
		WriteTable(os.Stderr, []*Result{r})
	}
	return r
}

// TestUncontendedRuns runs a short uncontended workload on a real local
// cluster and checks that ops completed without errors.
func TestUncontendedRuns(t *testing.T) {
	c := startCluster(t, localcluster.Options{Groups: 4})
	r := runShort(t, c, Options{Workload: Uncontended, Clients: 4, Names: 100, Duration: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond, ValueSize: 16})
	if r.Ops == 0 || r.OpsPerSec <= 0 || r.LatencyMS.P50 <= 0 {
		t.Fatalf("no ops measured: %+v", r)
	}
	if len(r.Errors) != 0 {
		t.Fatalf("errors: %v %v", r.Errors, r.ErrorSamples)
	}
}

// TestContendedRuns runs a short contended workload: hand-overs happen.
func TestContendedRuns(t *testing.T) {
	c := startCluster(t, localcluster.Options{Groups: 2})
	r := runShort(t, c, Options{Workload: Contended, Clients: 4, Duration: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond})
	if r.Ops == 0 {
		t.Fatalf("no hand-overs: %+v", r)
	}
	if len(r.Errors) != 0 {
		t.Fatalf("errors: %v %v", r.Errors, r.ErrorSamples)
	}
}

// TestSessionsRuns opens a few hundred sessions and keeps them alive for
// longer than their TTL. The TTL is 5s, not lockctl's 2s minimum: on a
// starved machine (a load average of 30 on 2 cores) a 2s session missed
// its keep-alives, which is the TTL doing its job, not a workload bug.
func TestSessionsRuns(t *testing.T) {
	c := startCluster(t, localcluster.Options{Groups: 2})
	r := runShort(t, c, Options{Workload: Sessions, Clients: 4, Sessions: 200, LocksPerSession: 2, Duration: 6 * time.Second, TTL: 5 * time.Second})
	if r.Ops != 200 || r.Extra["sessions_alive_after_hold"] != 200 {
		t.Fatalf("sessions: %d opened, %v alive; errors %v %v", r.Ops, r.Extra["sessions_alive_after_hold"], r.Errors, r.ErrorSamples)
	}
}

// TestFailoverRuns stops a master under load and checks that its groups
// are served again and that the dead holder's lock goes to the waiter no
// sooner than its TTL (DESIGN.md, lock table: expiry).
func TestFailoverRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("a failover run lasts about 10s")
	}
	c := startCluster(t, localcluster.Options{Groups: 4, Lease: time.Second})
	r := runShort(t, c, Options{Workload: Failover, Clients: 4, Names: 100, Duration: 8 * time.Second, Warmup: 300 * time.Millisecond, TTL: 2 * time.Second})
	if r.Extra["served_again_s"] <= 0 {
		t.Fatalf("failover not measured: %v", r.Extra)
	}
	if r.Extra["waiter_granted_s"] <= 0 {
		// The waiter's session may end during the failover when the
		// client does not fail over in time; the run reports it.
		t.Logf("the waiter was not granted: %v %v", r.Errors, r.ErrorSamples)
	}
	if r.Extra["granted_before_ttl"] != 0 {
		t.Fatalf("the waiter was granted the dead holder's lock before its TTL: %v", r.Extra)
	}
}
