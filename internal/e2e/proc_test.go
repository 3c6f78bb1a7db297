//go:build unix

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries are built once per test binary run, into a directory removed at
// the end (TestMain).
var (
	binDir   string
	binOnce  sync.Map // name -> *buildResult
	buildMus sync.Mutex
)

type buildResult struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	if role := os.Getenv(helperRoleEnv); role != "" {
		os.Exit(helperMain(role))
	}
	dir, err := os.MkdirTemp("", "lockd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goTool finds the go command: the one `go test` puts first on PATH, or
// the one of GOROOT.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// build builds ./cmd/NAME once and returns the binary's path.
func build(t testing.TB, name string) string {
	t.Helper()
	path, err := tryBuild(name)
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	return path
}

// tryBuild builds ./cmd/NAME once; the error says why it did not build.
func tryBuild(name string) (string, error) {
	v, _ := binOnce.LoadOrStore(name, &buildResult{})
	br := v.(*buildResult)
	br.once.Do(func() {
		// One build at a time: two links at once on a 2-core machine
		// take longer than one after the other.
		buildMus.Lock()
		defer buildMus.Unlock()
		out := filepath.Join(binDir, name)
		cmd := exec.Command(goTool(), "build", "-o", out, "github.com/lockd/lockd/cmd/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			br.err = fmt.Errorf("%v\n%s", err, b)
			return
		}
		br.path = out
	})
	return br.path, br.err
}

// lineBuf collects a process's output and lets a test wait for a line.
type lineBuf struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
	file    *os.File
}

func newLineBuf(file *os.File) *lineBuf {
	return &lineBuf{changed: make(chan struct{}), file: file}
}

func (b *lineBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.file != nil {
		b.file.Write(p)
	}
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *lineBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// wait waits up to timeout for re to match the output and returns the
// match (with submatches).
func (b *lineBuf) wait(re *regexp.Regexp, timeout time.Duration) ([]string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m := b.waitCtx(ctx, re, nil)
	return m, m != nil
}

// waitCtx waits for re to match the output and returns the match (with
// submatches), or nil when ctx ends first or when gone (the writer's
// process exited, so no more output comes; nil: never) closes and the
// output does not match.
func (b *lineBuf) waitCtx(ctx context.Context, re *regexp.Regexp, gone <-chan struct{}) []string {
	last := false
	for {
		b.mu.Lock()
		m := re.FindStringSubmatch(b.buf.String())
		ch := b.changed
		b.mu.Unlock()
		if m != nil || last {
			return m
		}
		select {
		case <-ch:
		case <-gone:
			last = true // one more look: the output is complete now
		case <-ctx.Done():
			return nil
		}
	}
}

// proc is a child process in its own process group, so that a signal to
// the group reaches what it started too (lockctl's command).
type proc struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	out   *lineBuf // stdout
	err   *lineBuf // stderr
	done  chan struct{}
	start time.Time
	end   time.Time
	code  int // exit code, -1 when killed by a signal; valid after done
}

// startProc starts bin with args and env added to the test's environment.
// Every process is killed (with its group) when the test ends.
func startProc(t testing.TB, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	logDir := filepath.Join(logRoot(t), name)
	os.MkdirAll(logDir, 0o755)
	stdoutFile, _ := os.Create(filepath.Join(logDir, "stdout"))
	stderrFile, _ := os.Create(filepath.Join(logDir, "stderr"))
	p := &proc{t: t, name: name, out: newLineBuf(stdoutFile), err: newLineBuf(stderrFile), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true"), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A grandchild in another process group (lockctl starts its command in
	// one) may keep the output pipes open after the process died.
	p.cmd.WaitDelay = 2 * time.Second
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.end = time.Now()
		p.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -2
		}
		stdoutFile.Close()
		stderrFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not die after SIGKILL", name, p.cmd.Process.Pid)
		}
	})
	return p
}

// signal sends sig to the process and everything it started.
func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	// A negative pid names the process group (Setpgid made pid its id).
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.t.Logf("signal %v to %s: %v", sig, p.name, err)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to timeout for the process to exit and returns its
// exit code.
func (p *proc) waitExit(timeout time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.code, true
	case <-time.After(timeout):
		return 0, false
	}
}

// patient stretches a wait for something that must happen into a hang
// guard. The durations the tests pass are what a quiet machine needs; a
// machine busy with other builds can take several times longer, and a test
// must not fail for that (issue 9, part 6). Figures go to the log and to
// benchmarks (lockctl bench failover), never into a bound a busy machine can
// miss. Bounds the other way (nothing happens before the TTL) stay exact:
// a slow machine cannot make them fail.
func patient(d time.Duration) time.Duration { return 4*d + 30*time.Second }

// mustExit is waitExit that fails the test when the process has not exited
// within patient(timeout).
func (p *proc) mustExit(timeout time.Duration) int {
	p.t.Helper()
	timeout = patient(timeout)
	code, ok := p.waitExit(timeout)
	if !ok {
		p.t.Fatalf("%s did not exit within %v\nstdout:\n%s\nstderr:\n%s", p.name, timeout, tail(p.out.String(), 20), tail(p.err.String(), 20))
	}
	return code
}

// mustSee waits for re on stdout and fails the test with the output when it
// does not come within patient(timeout).
func (p *proc) mustSee(re string, timeout time.Duration) []string {
	p.t.Helper()
	timeout = patient(timeout)
	m, ok := p.out.wait(regexp.MustCompile(re), timeout)
	if !ok {
		p.t.Fatalf("%s: no output matching %q within %v\nstdout:\n%s\nstderr:\n%s", p.name, re, timeout, tail(p.out.String(), 20), tail(p.err.String(), 20))
	}
	return m
}

// logRoot is where the processes of test t write their output. It is kept
// after the test when it fails or LOCKD_E2E_KEEP is set.
func logRoot(t testing.TB) string {
	t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return filepath.Join(testRoot(t), "logs-"+name)
}

var testRoots sync.Map // testing.TB -> string

// testRoot is a per-test directory that is removed after a passing test.
func testRoot(t testing.TB) string {
	t.Helper()
	if v, ok := testRoots.Load(t); ok {
		return v.(string)
	}
	dir, err := os.MkdirTemp("", "lockd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	testRoots.Store(t, dir)
	t.Cleanup(func() {
		testRoots.Delete(t)
		if t.Failed() || os.Getenv("LOCKD_E2E_KEEP") != "" {
			t.Logf("process logs and data kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs bin to completion within timeout and returns its output and exit
// code.
func run(t testing.TB, name, bin string, env []string, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := startProc(t, name, bin, env, args...)
	code = p.mustExit(timeout)
	return p.out.String(), p.err.String(), code
}

func mustRe(s string) *regexp.Regexp { return regexp.MustCompile(s) }
