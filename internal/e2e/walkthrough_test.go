//go:build unix

package e2e

import (
	"fmt"
	"strconv"
	"strings"
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
	ttl := 5 * time.Second
	if !fileExists("../../cmd/lockctl") {
		t.Skip("cmd/lockctl does not exist yet")
	}
	lockctlBin := build(t, "lockctl")
	c := startCluster(t, groups, lease)
	c.waitServing(20 * time.Second)
	l := &lockctlRunner{t: t, bin: lockctlBin, env: []string{"LOCKD_CONFIG=" + c.config}}

	// lockctl status shows a master for every group.
	c.waitLockctlMasters(l, 15*time.Second)

	// 1. acquire runs the command with the lock's name and token, and exits
	// with the command's code.
	out, errOut, code := l.run(15*time.Second, "acquire", "e2e-run", "--", "sh", "-c",
		`echo "name=$LOCKD_NAME token=$LOCKD_FENCING_TOKEN"; exit 7`)
	if code != 7 || !mustRe(`name=e2e-run token=[1-9][0-9]*\n`).MatchString(out) {
		t.Fatalf("lockctl acquire e2e-run -- sh -c ...; exit 7: exit %d, want 7\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	// 2. Contention: a holder, and a waiter queued behind it.
	name := "e2e-failover"
	g := wire.GroupOf(name, groups)
	holder := l.start("acquire", name, "--ttl", ttl.String(), "--kill-grace", "300ms", "--", "sh", "-c",
		`echo "holder token=$LOCKD_FENCING_TOKEN pid=$$"; exec sleep 30`)
	hm := holder.mustSee(`holder token=([0-9]+) pid=([0-9]+)\n`, 15*time.Second)
	holderToken := atou(t, hm[1])
	// lockctl runs its command in a process group of its own, so killing
	// lockctl's group leaves it behind: kill it at the end.
	cmdPid := int(atou(t, hm[2]))
	t.Cleanup(func() { syscall.Kill(cmdPid, syscall.SIGKILL) })
	waiterArgs := []string{"acquire", name, "--wait", "--ttl", ttl.String(), "--kill-grace", "300ms", "--", "sh", "-c", `echo "waiter token=$LOCKD_FENCING_TOKEN"`}
	early := l.start(waiterArgs...)
	c.waitWaiters(name, 1, 10*time.Second)
	if early.exited() || early.out.String() != "" {
		t.Fatalf("the waiter did not wait for the holder: exited=%v\n%s%s", early.exited(), early.out.String(), early.err.String())
	}

	// 3. watch masters prints every group's master.
	watch := l.start("watch", "masters")
	reMaster := `group %d\s+epoch [0-9]+\s+master node %s \(127\.0\.0\.1:[0-9]+\)`
	for gg := 0; gg < groups; gg++ {
		watch.mustSee(fmt.Sprintf(reMaster, gg, "[1-3]"), 10*time.Second)
	}

	// 4. SIGKILL the holder (nobody releases the lock: its session must
	// expire) and the master of the lock's group at the same moment.
	victim := c.masters()[g]
	if victim == 0 {
		t.Fatalf("group %d has no agreed master", g)
	}
	killed := time.Now()
	holder.signal(syscall.SIGKILL)
	c.kill(victim - 1)
	late := l.start(waiterArgs...)
	probeName := nameInGroup("e2e-probe", g, groups)
	probe := l.start("acquire", probeName, "--", "true")

	f := failover{t: t, killed: killed, ttl: ttl, bound: ttl + lease + 4*time.Second, prev: holderToken}
	earlyOK := f.granted(early, "lockctl acquire --wait queued before the failure")
	f.granted(late, "lockctl acquire --wait started after the failure")
	if code := probe.mustExit(f.bound); code != 0 {
		t.Errorf("lockctl acquire %s during the failover: exit %d\n%s", probeName, code, probe.err.String())
	}
	t.Logf("SIGKILL of master node %d and of the holder (token %d): lockctl acquire %s (group %d) succeeded after %v",
		victim, holderToken, probeName, g, probe.end.Sub(killed).Round(time.Millisecond))
	newMaster := fmt.Sprintf("[%s]", strings.ReplaceAll("123", strconv.Itoa(victim), ""))
	watch.mustSee(fmt.Sprintf(reMaster, g, newMaster), 5*time.Second)
	if !earlyOK {
		f.sessionLost(early, probe.end.Sub(killed))
	}

	// 5. Restart the killed node, then SIGSTOP another one: the cluster
	// keeps serving locks in every group.
	c.startNode(victim - 1)
	c.waitServing(15 * time.Second)
	stopped := 1 + victim%3
	c.nodes[stopped-1].signal(syscall.SIGSTOP)
	paused := time.Now()
	for gg := uint32(0); gg < groups; gg++ {
		n := nameInGroup("e2e-stop", gg, groups)
		out, errOut, code := l.run(f.bound, "acquire", n, "--", "sh", "-c", `echo "token=$LOCKD_FENCING_TOKEN"`)
		if code != 0 || !mustRe(`token=[1-9]`).MatchString(out) {
			t.Fatalf("lockctl acquire %s (group %d) with node %d stopped: exit %d\n%s%s", n, gg, stopped, code, out, errOut)
		}
	}
	t.Logf("with node %d stopped (SIGSTOP), every group served a lock within %v", stopped, time.Since(paused).Round(time.Millisecond))
	c.nodes[stopped-1].signal(syscall.SIGCONT)
	c.waitServing(15 * time.Second)
	watch.signal(syscall.SIGINT)
	if code := watch.mustExit(5 * time.Second); code != 0 && code != 130 {
		t.Errorf("lockctl watch masters exited %d on SIGINT", code)
	}
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
