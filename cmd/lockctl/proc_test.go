//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// These tests run lockctl as a real process, built once per test binary,
// where the point is about processes: signals, stdin, a killed lockctl.

var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
)

// lockctlBin builds ./cmd/lockctl (with CGO_ENABLED=0, as released) and
// returns the binary's path.
func lockctlBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "lockctl-test-bin-")
		if buildErr != nil {
			return
		}
		// -buildvcs=auto over a GOFLAGS=-buildvcs=false: version prints the
		// revision where git can tell it.
		cmd := exec.Command(goTool(), "build", "-buildvcs=auto", "-o", binDir, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New(err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build lockctl: %v", buildErr)
	}
	return filepath.Join(binDir, "lockctl")
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// syncBuf is a buffer a process writes while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type lockctlProc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuf
	exited         chan struct{}
	code           int
}

// startLockctl starts the lockctl binary with args; stdin nil is /dev/null.
func startLockctl(t *testing.T, stdin io.Reader, args ...string) *lockctlProc {
	t.Helper()
	p := &lockctlProc{exited: make(chan struct{})}
	p.cmd = exec.Command(lockctlBin(t), args...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = stdin, &p.stdout, &p.stderr
	// Once lockctl has exited, a CMD it left running must not keep Wait
	// waiting for the end of the output it inherited.
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// hangGuard bounds waits that only a hang could exceed, even on a loaded
// machine.
const hangGuard = 60 * time.Second

// wait returns lockctl's exit code.
func (p *lockctlProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(hangGuard):
		t.Fatalf("lockctl %v did not exit; stdout %q stderr %q", p.cmd.Args[1:], p.stdout.String(), p.stderr.String())
		return 0
	}
}

// waitFor polls cond until it holds; it fails the test after hangGuard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testClient connects a Go client to the cluster of config file cfg.
func testClient(t *testing.T, cfg string) *client.Client {
	t.Helper()
	conf, err := client.LoadConfigFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cl, err := client.New(ctx, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func lockStatus(t *testing.T, cl *client.Client, name string) *client.LockInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	info, err := cl.LockStatus(ctx, name)
	if err != nil {
		t.Fatalf("status of %s: %v", name, err)
	}
	return info
}

// A stop signal to a lockctl that waits for a held lock cancels its wait:
// it exits with 128+N, leaves no waiter behind, and when the holder
// releases, the next waiter gets the lock, not the dead lockctl's session.
func TestSignalWhileWaitingLeavesTheQueue(t *testing.T) {
	cfg := startCluster(t)
	cl := testClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
	defer cancel()
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
		args []string
	}{
		{syscall.SIGTERM, 143, []string{"--", "sh", "-c", "echo ran"}},
		{syscall.SIGINT, 130, []string{"--", "sh", "-c", "echo ran"}},
		{syscall.SIGHUP, 129, nil}, // without CMD: the detached acquire
	} {
		name := "q-" + strings.ToLower(tc.sig.String()[:4])
		holder, err := cl.NewSession(ctx, client.SessionOptions{TTL: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		held, err := holder.Acquire(ctx, name, client.LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// A long TTL: a wait left behind would hold up the next waiter
		// for 30s after lockctl is gone.
		p := startLockctl(t, nil, append([]string{"--config", cfg, "acquire", name, "--ttl", "30s"}, tc.args...)...)
		waitFor(t, "lockctl waits for "+name, func() bool { return lockStatus(t, cl, name).Waiters == 1 })
		p.cmd.Process.Signal(tc.sig)
		if code := p.wait(t); code != tc.code {
			t.Fatalf("%v: lockctl exited %d, want %d; stderr %q", tc.sig, code, tc.code, p.stderr.String())
		}
		if strings.Contains(p.stdout.String(), "ran") {
			t.Fatalf("%v: CMD ran after the signal", tc.sig)
		}
		// The wait was cancelled before lockctl exited.
		if info := lockStatus(t, cl, name); info.Waiters != 0 {
			t.Fatalf("%v: %d waiter(s) left in the queue after lockctl exited (a ghost waiter)", tc.sig, info.Waiters)
		}
		// lockctl status NAME agrees.
		code, out, _ := lockctl(t, "--config", cfg, "--json", "status", name)
		if st := decodeLine(t, out); code != exitOK || num(st, "waiters") != 0 {
			t.Fatalf("%v: lockctl status %s: exit %d %s", tc.sig, name, code, out)
		}

		// The next waiter is the next holder.
		events, err := cl.Watch(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		next, err := cl.NewSession(ctx, client.SessionOptions{TTL: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *client.Lock, 1)
		go func() {
			l, err := next.Acquire(ctx, name, client.LockOptions{})
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		waitFor(t, "the next waiter is queued", func() bool { return lockStatus(t, cl, name).Waiters == 1 })
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
		var grantedTo uint64
		for ev := range events {
			if ev.Kind == client.EventGranted && ev.Token > held.Token() {
				grantedTo = ev.Session
				break
			}
		}
		l := <-got
		if l == nil {
			t.FailNow()
		}
		if grantedTo != l.SessionID() {
			t.Fatalf("%v: after the holder released, session %d got the lock before the next waiter (session %d)", tc.sig, grantedTo, l.SessionID())
		}
		l.Release(ctx)
		holder.Close(ctx)
		next.Close(ctx)
	}
}

// A stop signal while CMD runs goes to CMD; lockctl waits for it, releases
// the lock and exits with 128+N, whatever CMD's own exit code.
func TestSignalWhileCommandRunsIsForwarded(t *testing.T) {
	cfg := startCluster(t)
	cl := testClient(t, cfg)
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}, {syscall.SIGHUP, 129}} {
		name := "run-" + strings.ToLower(tc.sig.String()[:4])
		script := `trap 'echo got-signal; exit 0' INT TERM HUP; echo started; while :; do sleep 0.05; done`
		p := startLockctl(t, nil, "--config", cfg, "acquire", name, "--", "sh", "-c", script)
		waitFor(t, "CMD starts", func() bool { return strings.Contains(p.stdout.String(), "started") })
		p.cmd.Process.Signal(tc.sig)
		if code := p.wait(t); code != tc.code {
			t.Fatalf("%v: lockctl exited %d, want %d; stderr %q", tc.sig, code, tc.code, p.stderr.String())
		}
		if !strings.Contains(p.stdout.String(), "got-signal") {
			t.Fatalf("%v: CMD did not get the signal: stdout %q", tc.sig, p.stdout.String())
		}
		if info := lockStatus(t, cl, name); info.Held {
			t.Fatalf("%v: the lock is still held after lockctl exited: %+v", tc.sig, info)
		}
	}
}

// CMD reads /dev/null unless --stdin: a command run under a lock must not
// stop on a terminal read while it holds the lock.
func TestCommandStdinOnlyWithFlag(t *testing.T) {
	cfg := startCluster(t)
	script := `if read x; then echo "read:$x"; else echo eof; fi`
	p := startLockctl(t, strings.NewReader("hello\n"), "--config", cfg, "acquire", "in", "--", "sh", "-c", script)
	if code := p.wait(t); code != 0 || strings.TrimSpace(p.stdout.String()) != "eof" {
		t.Fatalf("without --stdin: exit %d, CMD printed %q, want eof (stdin /dev/null); stderr %q", code, p.stdout.String(), p.stderr.String())
	}
	p = startLockctl(t, strings.NewReader("hello\n"), "--config", cfg, "acquire", "in", "--stdin", "--", "sh", "-c", script)
	if code := p.wait(t); code != 0 || strings.TrimSpace(p.stdout.String()) != "read:hello" {
		t.Fatalf("with --stdin: exit %d, CMD printed %q, want read:hello; stderr %q", code, p.stdout.String(), p.stderr.String())
	}
	p = startLockctl(t, strings.NewReader("hello\n"), "--config", cfg, "elect", "in-lead", "--stdin", "--", "sh", "-c", script)
	if code := p.wait(t); code != 0 || strings.TrimSpace(p.stdout.String()) != "read:hello" {
		t.Fatalf("elect --stdin: exit %d, CMD printed %q, want read:hello; stderr %q", code, p.stdout.String(), p.stderr.String())
	}
}

// lockctl version names the VCS revision the binary was built from, and
// completion prints scripts for bash and zsh.
func TestVersionAndCompletion(t *testing.T) {
	p := startLockctl(t, nil, "version")
	if code := p.wait(t); code != 0 {
		t.Fatalf("lockctl version: exit %d, stderr %q", code, p.stderr.String())
	}
	if err := exec.Command("git", "rev-parse", "HEAD").Run(); err != nil {
		t.Skipf("no git repository here: %v", err)
	}
	// The revision is a commit of this repository (HEAD may have moved on
	// since the build).
	out := p.stdout.String()
	f := strings.Fields(out)
	i := slices.Index(f, "revision")
	if !strings.HasPrefix(out, "lockctl ") || i < 0 || i+1 >= len(f) {
		t.Fatalf("lockctl version printed %q, want a revision", out)
	}
	rev := strings.TrimSuffix(f[i+1], "+dirty")
	if err := exec.Command("git", "cat-file", "-e", rev+"^{commit}").Run(); len(rev) != 40 || err != nil {
		t.Fatalf("lockctl version printed %q: %q is not a commit here (%v)", out, rev, err)
	}
	for _, sh := range []string{"bash", "zsh"} {
		p := startLockctl(t, nil, "completion", sh)
		if code := p.wait(t); code != 0 || !strings.Contains(p.stdout.String(), "--generate-bash-completion") {
			t.Fatalf("lockctl completion %s: exit %d, %q", sh, code, p.stdout.String())
		}
	}
	p = startLockctl(t, nil, "--generate-bash-completion")
	if p.wait(t); !strings.Contains(p.stdout.String(), "acquire") {
		t.Fatalf("lockctl --generate-bash-completion: %q", p.stdout.String())
	}
}
