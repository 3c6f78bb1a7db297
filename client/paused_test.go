//go:build unix

package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/pki"
)

// The paused-waiter test runs a real client process: this test binary,
// started again with these variables set, runs TestPausedWaiterChild only.
const (
	envChild       = "LOCKD_TEST_CLIENT"
	envChildConfig = "LOCKD_TEST_CLIENT_CONFIG"
	pausedTTL      = time.Second // the cluster's minimum
	// pausedWaiters is how many sessions of the child wait, each for a
	// lock of its own. Each one's grant races, on SIGCONT, with its
	// keep-alive loop noticing the deadline; the more waiters, the surer
	// a grant wins a race somewhere, if nothing but that race stops it.
	pausedWaiters = 8
)

func pausedLock(i int) string { return fmt.Sprintf("paused-%d", i) }

// pausedReport is the child's one line of output, after "RESULT ".
type pausedReport struct {
	Lock    string `json:"lock"`
	Granted bool   `json:"granted"`
	Token   uint64 `json:"token,omitempty"`
	Err     string `json:"err,omitempty"`
	// SessionErr says errors.Is(err, ErrSessionExpired).
	SessionErr bool `json:"session_err"`
	// PastDeadline is how long after the session's deadline (by the
	// client's clock, as it stood when Acquire returned) Acquire returned;
	// negative when before. HasDeadline is false when there was none.
	PastDeadline time.Duration `json:"past_deadline"`
	HasDeadline  bool          `json:"has_deadline"`
}

// TestPausedWaiterChild is the child process of
// TestIntegrationPausedWaiterGetsNoLockPastDeadline; it does nothing in a
// normal run. It connects with the config file it is given, waits in
// Acquire in each of its sessions, and reports how each ended.
func TestPausedWaiterChild(t *testing.T) {
	if os.Getenv(envChild) != "1" {
		t.Skip("the child process of TestIntegrationPausedWaiterGetsNoLockPastDeadline")
	}
	cfg, err := LoadConfigFile(os.Getenv(envChildConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = testLogger()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reports := make(chan pausedReport, pausedWaiters)
	for i := range pausedWaiters {
		s, err := c.NewSession(ctx, SessionOptions{TTL: pausedTTL})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			l, err := s.Acquire(ctx, pausedLock(i), LockOptions{})
			at := c.clk.Now()
			// The deadline as it stood at the return: it only moves when
			// a keep-alive sent later is answered, and none sent after
			// the pause can count for a session that passed its deadline
			// during it.
			d, ok := s.deadline()
			rep := pausedReport{Lock: pausedLock(i), Granted: l != nil, SessionErr: errors.Is(err, ErrSessionExpired), HasDeadline: ok}
			if l != nil {
				rep.Token = l.Token()
			}
			if err != nil {
				rep.Err = err.Error()
			}
			if ok {
				rep.PastDeadline = at.Sub(d)
			}
			reports <- rep
		}()
	}
	for range pausedWaiters {
		b, _ := json.Marshal(<-reports)
		fmt.Printf("RESULT %s\n", b)
	}
}

// A real client process waits in Acquire for a held lock and is paused
// (SIGSTOP) for longer than its session's TTL. The holder releases during
// the pause, so the grant is pushed to the paused process. On SIGCONT, its
// Acquire must not return that lock: its session's deadline (TTL minus the
// margin, by its own clock) passed during the pause, and the cluster has
// expired the session or is about to. It must fail with the session's
// error instead.
func TestIntegrationPausedWaiterGetsNoLockPastDeadline(t *testing.T) {
	if os.Getenv(envChild) == "1" {
		t.Skip("in the child process")
	}
	tc := startCluster(t, 3, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	holder := tc.client()
	sh, err := holder.NewSession(ctx, SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var held []*Lock
	for i := range pausedWaiters {
		l, err := sh.Acquire(ctx, pausedLock(i), LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}

	// The child's client config, as `lockd dev` writes one.
	dir := t.TempDir()
	certPEM, keyPEM, err := tc.ca.IssueClient("paused-child")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), tc.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyPair(dir, "client", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "client.json")
	if err := WriteConfigFile(cfgPath, Config{Endpoints: tc.addrs, CAFile: "ca.crt", CertFile: "client.crt", KeyFile: "client.key"}); err != nil {
		t.Fatal(err)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestPausedWaiterChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChild+"=1", envChildConfig+"="+cfgPath)
	cmd.Stderr = os.Stderr
	reports := make(chan string, pausedWaiters)
	cmd.Stdout = &reportWriter{out: reports}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if stopped {
			cmd.Process.Signal(syscall.SIGCONT)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}()

	waitFor(t, 20*time.Second, "the child's sessions to queue", func() bool {
		for i := range pausedWaiters {
			info, err := holder.LockStatus(ctx, pausedLock(i))
			if err != nil || info.Waiters != 1 {
				return false
			}
		}
		return true
	})
	// A little over a keep-alive interval, so that the child has had a
	// keep-alive answered since its open: the pause then starts from a
	// steady session, as in the field.
	time.Sleep(pausedTTL / 2)

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped = true
	pausedAt := time.Now()
	time.Sleep(100 * time.Millisecond)
	// Released while the child's sessions still live on the cluster: the
	// grants are pushed to the paused process.
	for _, l := range held {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Paused for longer than the TTL, but less than the QUIC idle timeout
	// (2s), so that the connection, and the pushed grant in it, survive.
	time.Sleep(time.Until(pausedAt.Add(pausedTTL + 300*time.Millisecond)))
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	t.Logf("the child was paused for %v", time.Since(pausedAt))

	for range pausedWaiters {
		var line string
		select {
		case line = <-reports:
		case <-time.After(30 * time.Second):
			t.Fatal("a report is missing from the child 30s after SIGCONT")
		}
		var rep pausedReport
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatalf("child report %q: %v", line, err)
		}
		t.Logf("child, %s: granted %v (token %d), %v relative to its deadline, err: %s", rep.Lock, rep.Granted, rep.Token, rep.PastDeadline, rep.Err)
		switch {
		case rep.Granted && (!rep.HasDeadline || rep.PastDeadline >= 0):
			t.Errorf("%s: Acquire returned token %d %v after its session's deadline had passed", rep.Lock, rep.Token, rep.PastDeadline)
		case rep.Granted:
			t.Errorf("%s: Acquire returned token %d %v before its deadline, after a pause longer than the TTL", rep.Lock, rep.Token, -rep.PastDeadline)
		case !rep.SessionErr:
			t.Errorf("%s: Acquire failed with %q, want an error matching ErrSessionExpired", rep.Lock, rep.Err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

// reportWriter is the child's stdout: it passes on the report lines.
type reportWriter struct {
	buf []byte
	out chan<- string
}

func (w *reportWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line, ok := strings.CutPrefix(string(w.buf[:i]), "RESULT "); ok {
			select {
			case w.out <- line:
			default:
			}
		}
		w.buf = w.buf[i+1:]
	}
}
