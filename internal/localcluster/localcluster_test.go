package localcluster

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestStartStopRestart checks the life cycle: masters for every group, a
// stopped node's groups move to the others, a restarted node rejoins, and
// Close removes the temp dir.
func TestStartStopRestart(t *testing.T) {
	c, err := Start(Options{Groups: 3, Faults: true, Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ClientTLS(); err != nil {
		t.Fatal(err)
	}
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("endpoints: %d, want 3", got)
	}
	// A hang guard only: each wait takes seconds on a quiet machine.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	masters, err := c.WaitForMasters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := masters[0]
	if err := c.Stop(victim); err != nil {
		t.Fatal(err)
	}
	if c.Running(victim) || c.Server(victim) != nil {
		t.Fatalf("node %d still runs after Stop", victim)
	}
	masters, err = c.WaitForMasters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for g, m := range masters {
		if m == victim {
			t.Fatalf("group %d still served by stopped node %d", g, victim)
		}
	}
	if err := c.DelayPeer((victim+1)%3, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c.Heal()
	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForMasters(ctx); err != nil {
		t.Fatal(err)
	}
	dir := c.Dir()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.CA().IssueClient("x"); err != nil {
		t.Fatal(err)
	}
	if fileExists(dir) {
		t.Fatalf("Close left %s behind", dir)
	}
}

// TestNoFaults checks that fault controls say why they cannot work.
func TestNoFaults(t *testing.T) {
	c, err := Start(Options{Groups: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.DelayPeer(0, time.Millisecond); err == nil {
		t.Fatal("DelayPeer without Faults: no error")
	}
	if err := c.Isolate(0); err == nil {
		t.Fatal("Isolate without Faults: no error")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
