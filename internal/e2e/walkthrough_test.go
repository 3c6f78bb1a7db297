//go:build unix

package e2e

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// lockctlRunner runs lockctl against a cluster.
type lockctlRunner struct {
	t   *testing.T
	bin string
	env []string
	n   int
}

func (l *lockctlRunner) start(args ...string) *proc {
	l.t.Helper()
	l.n++
	return startProc(l.t, fmt.Sprintf("lockctl-%02d-%s", l.n, args[0]), l.bin, l.env, args...)
}

// run runs lockctl to completion within timeout.
func (l *lockctlRunner) run(timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	l.t.Helper()
	p := l.start(args...)
	code = p.mustExit(timeout)
	return p.out.String(), p.err.String(), code
}

// TestWalkthroughFailover goes through the README walk-through with the real
// lockctl against three `lockd run` processes, then kills the master of the
// contended lock's group together with the lock's holder:
//
//   - acquire runs a command with LOCKD_NAME and LOCKD_FENCING_TOKEN and
//     exits with the command's code;
//   - a second acquire --wait waits while the lock is held;
//   - watch masters streams the masters;
//   - after SIGKILL of the holder and of the group's master, the waiter is
//     granted with a larger fencing token (DESIGN.md "Fencing token"), not
//     before the holder's session TTL ran out (the new master's grace), and
//     within TTL + election + margin;
//   - a SIGSTOPped node does not stop the cluster serving locks.
func TestWalkthroughFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real processes; skipped with -short")
	}
	const groups = 4
	lease := 2 * time.Second
	ttl := 3 * time.Second
	if !fileExists("../../cmd/lockctl") {
		t.Skip("cmd/lockctl does not exist yet")
	}
	lockctlBin := build(t, "lockctl")
	c := startCluster(t, groups, lease)
	c.waitServing(20 * time.Second)
	l := &lockctlRunner{t: t, bin: lockctlBin, env: []string{"LOCKD_CONFIG=" + c.config}}

	// status shows a master for every group.
	out, errOut, code := l.run(15*time.Second, "status")
	if code != 0 {
		t.Fatalf("lockctl status: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("lockctl status:\n%s", out)

	// 1. acquire runs the command with the lock's name and token, and exits
	// with the command's code.
	out, errOut, code = l.run(15*time.Second, "acquire", "e2e-run", "--", "sh", "-c",
		`echo "name=$LOCKD_NAME token=$LOCKD_FENCING_TOKEN"; exit 7`)
	if code != 7 || !mustRe(`name=e2e-run token=[1-9][0-9]*\n`).MatchString(out) {
		t.Fatalf("lockctl acquire e2e-run -- sh -c ...; exit 7: exit %d, want 7\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	// 2. Contention: a holder, and a waiter queued behind it.
	name := "e2e-failover"
	g := wire.GroupOf(name, groups)
	holder := l.start("acquire", name, "--ttl", ttl.String(), "--", "sh", "-c",
		`echo "holder token=$LOCKD_FENCING_TOKEN"; exec sleep 60`)
	holderToken := atou(t, holder.mustSee(`holder token=([0-9]+)\n`, 15*time.Second)[1])
	waiter := l.start("acquire", name, "--wait", "--ttl", ttl.String(), "--", "sh", "-c",
		`echo "waiter token=$LOCKD_FENCING_TOKEN"`)
	c.waitWaiters(name, 1, 10*time.Second)
	if waiter.exited() || waiter.out.String() != "" {
		t.Fatalf("the waiter did not wait for the holder: exited=%v\n%s%s", waiter.exited(), waiter.out.String(), waiter.err.String())
	}

	// 3. watch masters streams the masters of every group.
	watch := l.start("watch", "masters")
	watch.mustSee(`(?m)^.*\b`+strconv.Itoa(groups-1)+`\b.*$`, 10*time.Second)
	t.Logf("lockctl watch masters:\n%s", watch.out.String())

	// 4. SIGKILL the holder (its session must expire: nobody releases the
	// lock) and the master of the lock's group at the same moment.
	masters := c.masters()
	victim := masters[g]
	if victim == 0 {
		t.Fatalf("group %d has no agreed master: %v", g, masters)
	}
	killed := time.Now()
	holder.signal(syscall.SIGKILL)
	c.nodes[victim-1].signal(syscall.SIGKILL)
	// A fresh acquire in the same group measures when locks are served
	// again for anyone.
	probeName := nameInGroup("e2e-probe", g, groups)
	probe := l.start("acquire", probeName, "--", "true")

	bound := ttl + lease + 4*time.Second
	m := waiter.mustSee(`waiter token=([0-9]+)\n`, bound+5*time.Second)
	granted := time.Since(killed)
	waiterToken := atou(t, m[1])
	if code := waiter.mustExit(10 * time.Second); code != 0 {
		t.Errorf("the waiter's lockctl exited %d after its command succeeded\n%s", code, waiter.err.String())
	}
	if code := probe.mustExit(bound); code != 0 {
		t.Errorf("lockctl acquire %s during the failover: exit %d\n%s", probeName, code, probe.err.String())
	}
	served := probe.end.Sub(killed)
	t.Logf("SIGKILL of master node %d and of the holder: locks of group %d served again after %v, waiter granted after %v (TTL %v, lease %v, bound %v); tokens %d -> %d",
		victim, g, served.Round(time.Millisecond), granted.Round(time.Millisecond), ttl, lease, bound, holderToken, waiterToken)
	if waiterToken <= holderToken {
		t.Errorf("the waiter's fencing token %d is not larger than the dead holder's %d", waiterToken, holderToken)
	}
	if granted < ttl {
		t.Errorf("the waiter was granted %v after the holder died, before the holder's TTL %v ran out", granted, ttl)
	}
	if granted > bound {
		t.Errorf("the waiter was granted %v after the holder died, more than TTL + lease + margin = %v", granted, bound)
	}
	watch.mustSee(fmt.Sprintf(`(?m)^.*\b%d\b.*$`, g), time.Second)

	// 5. Restart the killed node, then SIGSTOP another one: the cluster
	// keeps serving locks in every group.
	c.startNode(victim - 1)
	c.waitServing(15 * time.Second)
	stopped := 1 + victim%3
	c.nodes[stopped-1].signal(syscall.SIGSTOP)
	paused := time.Now()
	for gg := uint32(0); gg < groups; gg++ {
		n := nameInGroup("e2e-stop", gg, groups)
		out, errOut, code := l.run(bound, "acquire", n, "--", "sh", "-c", `echo "token=$LOCKD_FENCING_TOKEN"`)
		if code != 0 || !mustRe(`token=[1-9]`).MatchString(out) {
			t.Fatalf("lockctl acquire %s (group %d) with node %d stopped: exit %d\n%s%s", n, gg, stopped, code, out, errOut)
		}
	}
	t.Logf("with node %d stopped (SIGSTOP), every group served a lock within %v", stopped, time.Since(paused).Round(time.Millisecond))
	c.nodes[stopped-1].signal(syscall.SIGCONT)
	c.waitServing(15 * time.Second)
	watch.signal(syscall.SIGINT)
	c.stopAll()
}

func atou(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return v
}
