//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// devPorts picks a base port from which n UDP ports are free right now,
// derived from the pid so that parallel test runs rarely meet.
func devPorts(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := 20000 + (os.Getpid()*7+rand.IntN(1000)*13)%30000
		free := true
		for i := 0; i < n && free; i++ {
			pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				free = false
				break
			}
			pc.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no free port range found")
	return 0
}

// startDev starts `lockd dev` and returns it with the lockctl config path it
// printed. A port taken in between (exit 4) is retried with other ports.
func startDev(t *testing.T, extra ...string) (*proc, string, int) {
	t.Helper()
	lockd := build(t, "lockd")
	for attempt := 1; ; attempt++ {
		base := devPorts(t, 3)
		// TCP and UDP ports are separate namespaces: the admin pages can
		// use the same numbers as the nodes.
		args := append([]string{"dev", "--base-port", strconv.Itoa(base), "--admin-base-port", strconv.Itoa(base)}, extra...)
		p := startProc(t, fmt.Sprintf("lockd-dev.%d", attempt), lockd, nil, args...)
		m, ok := p.out.wait(reLockdConfig, 20*time.Second)
		if ok {
			return p, m[1], base
		}
		if code, exited := p.waitExit(time.Second); exited && code == lockdExitAddrBusy && attempt < 3 {
			continue
		}
		t.Fatalf("lockd dev printed no config within 20s\nstdout:\n%s\nstderr:\n%s", p.out.String(), tail(p.err.String(), 20))
	}
}

var reLockdConfig = mustRe(`export LOCKD_CONFIG=(\S+)\n`)

// devConfig is the lockctl config file lockd dev writes.
type devConfig struct {
	Endpoints []string `json:"endpoints"`
	CA        string   `json:"ca"`
	Cert      string   `json:"cert"`
	Key       string   `json:"key"`
}

// TestDevClusterServesLocks is the README's first command (F1): `lockd dev`
// starts a working cluster on a fresh machine, prints how to use it, and
// cleans up after itself on Ctrl-C.
func TestDevClusterServesLocks(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real processes; skipped with -short")
	}
	started := time.Now()
	p, cfgPath, base := startDev(t)
	t.Logf("lockd dev ready in %v", time.Since(started).Round(time.Millisecond))
	out := p.out.String()
	for _, want := range []string{"acquire demo -- sh -c", "status", "watch masters", fmt.Sprintf("http://127.0.0.1:%d/", base), "Ctrl-C"} {
		if !strings.Contains(out, want) {
			t.Errorf("lockd dev's instructions do not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(p.err.String(), "receive buffer size") {
		t.Errorf("lockd dev printed quic-go's UDP buffer warning:\n%s", p.err.String())
	}
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg devConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v\n%s", cfgPath, err, b)
	}
	if len(cfg.Endpoints) != 3 || cfg.CA == "" || cfg.Cert == "" || cfg.Key == "" {
		t.Fatalf("%s is incomplete: %s", cfgPath, b)
	}

	// A lock through the printed config: with the Go client, and with
	// lockctl as the printed instructions do.
	clientAcquireRelease(t, cfgPath, "dev-demo")
	if fileExists("../../cmd/lockctl") {
		lockctl := build(t, "lockctl")
		env := []string{"LOCKD_CONFIG=" + cfgPath}
		stdout, stderr, code := run(t, "lockctl-acquire", lockctl, env, 20*time.Second,
			"acquire", "dev-demo", "--", "sh", "-c", `echo "name=$LOCKD_NAME token=$LOCKD_FENCING_TOKEN"`)
		if code != 0 || !mustRe(`name=dev-demo token=[1-9][0-9]*`).MatchString(stdout) {
			t.Fatalf("lockctl acquire through lockd dev: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	}

	// The status page answers, and its data says which node it is.
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", base))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<title>lockd") {
		t.Errorf("status page: %d\n%s", resp.StatusCode, page)
	}
	resp, err = hc.Get(fmt.Sprintf("http://127.0.0.1:%d/api/status", base))
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `"node":1`) {
		t.Errorf("/api/status: %d\n%s", resp.StatusCode, page)
	}

	// Ctrl-C stops it and removes the temp dir.
	p.signal(syscall.SIGINT)
	if code := p.mustExit(20 * time.Second); code != 0 {
		t.Fatalf("lockd dev exited %d after SIGINT\n%s", code, tail(p.err.String(), 20))
	}
	if _, err := os.Stat(filepath.Dir(cfgPath)); !os.IsNotExist(err) {
		t.Errorf("lockd dev left %s behind (stat: %v)", filepath.Dir(cfgPath), err)
	}
}

// clientAcquireRelease acquires and releases name with the Go client,
// configured from the config file lockd dev wrote.
func clientAcquireRelease(t *testing.T, cfgPath, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := client.LoadConfigFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(ctx, cfg)
	if err != nil {
		t.Fatalf("client.New with %s: %v", cfgPath, err)
	}
	defer cl.Close()
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer sess.Close(ctx)
	lock, err := sess.Acquire(ctx, name, client.LockOptions{})
	if err != nil {
		t.Fatalf("acquire %s: %v", name, err)
	}
	if lock.Token() == 0 {
		t.Errorf("acquire %s: fencing token 0", name)
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatalf("release %s: %v", name, err)
	}
	t.Logf("acquired and released %s with token %d through the Go client", name, lock.Token())
}
