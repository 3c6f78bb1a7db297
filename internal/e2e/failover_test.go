//go:build unix

package e2e

import (
	"syscall"
	"testing"
	"time"
)

// TestNodesServeAgainAfterMasterIsKilled checks, with lockd processes only,
// the promise of DESIGN.md "Masters and leases": when a master dies, its
// groups are served again by a survivor once the old lease is over, a
// restarted node rejoins, and a node stopped with SIGSTOP (a long GC pause,
// a frozen VM) does not stop the cluster serving.
func TestNodesServeAgainAfterMasterIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real processes; skipped with -short")
	}
	const groups = 4
	lease := 2 * time.Second
	c := startCluster(t, groups, lease)
	masters := c.waitServing(20 * time.Second)
	t.Logf("masters per group: %v", masters)

	victim := masters[0]
	var lost []uint32
	for g, m := range masters {
		if m == victim {
			lost = append(lost, uint32(g))
		}
	}
	killed := time.Now()
	c.nodes[victim-1].signal(syscall.SIGKILL)
	c.nodes[victim-1].mustExit(5 * time.Second)
	// Bound: the lease the survivors still count, plus the campaign delay of
	// the farthest survivor and a few round trips (election/doc.go says 2.1
	// to 2.4 s for the default lease), plus margin for a loaded machine.
	bound := lease + 3*time.Second
	now := c.waitServing(bound)
	took := time.Since(killed)
	for _, g := range lost {
		if now[g] == victim {
			t.Fatalf("group %d is still mastered by killed node %d", g, victim)
		}
	}
	t.Logf("SIGKILL of node %d (master of groups %v) to every group served again: %v (bound %v)", victim, lost, took.Round(time.Millisecond), bound)
	if took > bound {
		t.Errorf("failover took %v, more than the bound %v", took, bound)
	}

	// The killed node comes back on its data dir and takes its share back.
	c.startNode(victim - 1)
	c.waitServing(10 * time.Second)

	// SIGSTOP: the stopped node neither answers nor closes its connections.
	stopped := 1 + victim%3
	c.nodes[stopped-1].signal(syscall.SIGSTOP)
	paused := time.Now()
	now = c.waitServing(bound)
	for g, m := range now {
		if m == stopped {
			t.Fatalf("group %d is served by stopped node %d", g, stopped)
		}
	}
	t.Logf("SIGSTOP of node %d to every group served again: %v", stopped, time.Since(paused).Round(time.Millisecond))
	c.nodes[stopped-1].signal(syscall.SIGCONT)
	c.waitServing(10 * time.Second)
	for i, p := range c.nodes {
		if p.exited() {
			t.Fatalf("node %d exited (code %d):\n%s", i+1, p.code, tail(p.err.String(), 20))
		}
	}
	c.stopAll()
}
