package election

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/replica"
)

// holdGroup0 makes e (node 1, preferred by group 0) the holder of group 0's
// lease at t0 and returns when its renewal is due.
func holdGroup0(t *testing.T, e *Elector) time.Time {
	t.Helper()
	a, at := tickUntil(t, e, 0, ActPropose, t0, t0.Add(5*time.Second), asMaster(1))
	mustApply(t, e, 0, 0, a.Cmd, at.Add(10*time.Millisecond))
	if !e.Serving(0, at.Add(20*time.Millisecond)) {
		t.Fatal("node 1 does not serve group 0 after its lease was applied")
	}
	return at.Add(e.cfg.RenewEvery)
}

// Rule 6 on a busy node: a holder renews even while the replica is too busy
// to answer a status query within a tick (issue 9, part 5). The status
// query waits behind client traffic in the replica's loop; a renewal that
// waits for it can miss tick after tick until the lease runs out.
func TestRenewalDoesNotWaitForTheReplicasStatus(t *testing.T) {
	e := newTestElector(t, 1, nil)
	due := holdGroup0(t, e)
	busy := func(paxos.GroupID) (paxos.GroupStatus, error) { return paxos.GroupStatus{}, context.DeadlineExceeded }
	a, ok := find(e.Tick(due, busy), 0, ActPropose)
	if !ok || a.Cmd.Release || a.Cmd.Holder != 1 {
		t.Fatalf("no renewal of group 0 while the replica's status times out (got %+v)", a)
	}
	// Once a renewal fails (say the node is no longer the Paxos master),
	// the next one asks for the status, and campaigns.
	e.Failed(0, a.Cmd.Nonce, &paxos.NotMasterError{})
	acts := e.Tick(due.Add(e.cfg.Tick), asFollower(2))
	if _, ok := find(acts, 0, ActCampaign); !ok {
		t.Fatalf("after a NotMaster failure the holder does not campaign again: %+v", acts)
	}
}

// A node that is about to stop hands every group it holds over, even the
// groups that prefer it, and campaigns for none (issue 9, part 5).
func TestRetireHandsEveryGroupOver(t *testing.T) {
	e := newTestElector(t, 1, nil)
	due := holdGroup0(t, e)
	if n := e.Retire(); n != 1 {
		t.Fatalf("Retire says %d groups held, want 1", n)
	}
	now := due.Add(-e.cfg.RenewEvery / 2)
	a, ok := find(e.Tick(now, asMaster(1)), 0, ActPropose)
	if !ok || !a.Cmd.Release || a.Cmd.To != 2 {
		t.Fatalf("a retiring holder of group 0 proposes %+v, want a release to node 2", a)
	}
	if e.Serving(0, now) {
		t.Fatal("a retiring node still serves group 0 after it decided to release it")
	}
	mustApply(t, e, 0, 1, a.Cmd, now.Add(10*time.Millisecond))
	if n := e.Holding(); n != 0 {
		t.Fatalf("Holding is %d after the release was applied, want 0", n)
	}
	for at := now; at.Before(now.Add(10 * time.Second)); at = at.Add(50 * time.Millisecond) {
		for _, a := range e.Tick(at, asFollower(0)) {
			t.Fatalf("a retired node acts at %v: %+v", at.Sub(t0), a)
		}
	}
}

// idleDriver is a replica that never makes this node master.
type idleDriver struct{}

func (idleDriver) Campaign(context.Context, paxos.GroupID) error { return nil }
func (idleDriver) Status(_ context.Context, g paxos.GroupID) (paxos.GroupStatus, error) {
	return paxos.GroupStatus{Group: g, Role: roleFollower}, nil
}
func (idleDriver) Propose(context.Context, paxos.GroupID, paxos.Command) (replica.Result, error) {
	return replica.Result{}, errors.New("idle")
}

// Events agree with leases: Run announces "no master" when the master's
// lease runs out by this node's count, even when no tick comes (a busy
// machine runs ticks late; here the tick is an hour), and not before.
func TestRunAnnouncesNoMasterWhenTheLeaseRunsOut(t *testing.T) {
	e := newTestElector(t, 1, func(c *Config) { c.Lease = 400 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, e, DriverConfig{Replica: idleDriver{}, Tick: time.Hour,
			Command: func(paxos.GroupID, LeaseCmd) paxos.Command { return paxos.Command{} }})
	}()
	ch, unsub, err := e.Subscribe(map[paxos.GroupID]uint64{0: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	learned := time.Now()
	lc := foreignLease(2, 1)
	lc.Duration = 400 * time.Millisecond
	mustApply(t, e, 0, 0, lc, learned)
	guard := time.After(time.Minute) // a hang guard only
	for {
		select {
		case ev := <-ch:
			if ev.Group != 0 || ev.Master != 0 {
				continue
			}
			if ev.Cause != CauseExpired {
				t.Fatalf("got %v, want the lease's expiry", ev)
			}
			if at := time.Since(learned); at < lc.Duration {
				t.Fatalf("no master announced %v after the lease was learned, before it ran out (%v)", at, lc.Duration)
			}
			t.Logf("no master announced %v after the lease was learned (lease %v)", time.Since(learned).Round(time.Millisecond), lc.Duration)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			return
		case <-guard:
			t.Fatal("no \"no master\" event within a minute of a 400ms lease without renewal")
		}
	}
}
