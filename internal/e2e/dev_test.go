//go:build unix

package e2e

import (
	"context"
	"crypto/tls"
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

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/wire"
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

	// A lock through the printed config: with the wire protocol, and with
	// lockctl as the printed instructions do.
	tlsConf, err := pki.LoadClientTLSConfig(cfg.CA, cfg.Cert, cfg.Key)
	if err != nil {
		t.Fatal(err)
	}
	wireAcquireRelease(t, cfg.Endpoints, tlsConf, "dev-demo", 16)
	if fileExists("../../cmd/lockctl") {
		lockctl := build(t, "lockctl")
		env := []string{"LOCKD_CONFIG=" + cfgPath}
		stdout, stderr, code := run(t, "lockctl-acquire", lockctl, env, 20*time.Second,
			"acquire", "dev-demo", "--", "sh", "-c", `echo "name=$LOCKD_NAME token=$LOCKD_FENCING_TOKEN"`)
		if code != 0 || !mustRe(`name=dev-demo token=[1-9][0-9]*`).MatchString(stdout) {
			t.Fatalf("lockctl acquire through lockd dev: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	}

	// The status page answers.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", base))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "lockd node 1") {
		t.Errorf("status page: %d\n%s", resp.StatusCode, page)
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

// wireAcquireRelease opens a session, acquires and releases name with the
// wire protocol, following redirects to the group's master.
func wireAcquireRelease(t *testing.T, endpoints []string, tc *tls.Config, name string, groups int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g := wire.GroupOf(name, groups)
	client := rand.Uint64()>>1 | 1
	var seq uint64
	addr := endpoints[0]
	do := func(req wire.Msg) wire.Msg {
		t.Helper()
		seq++
		req.Client, req.Seq, req.Group = client, seq, g
		for ctx.Err() == nil {
			p, err := dialProbe(ctx, addr, tc)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			resp, err := p.call(ctx, req)
			p.close()
			if err != nil {
				t.Fatalf("%s to %s: %v", req.Type, addr, err)
			}
			switch {
			case resp.Code == wire.CodeNotMaster && resp.HintAddr != "":
				addr = resp.HintAddr
			case resp.Code.Retryable():
				time.Sleep(50 * time.Millisecond)
			default:
				return resp
			}
		}
		t.Fatalf("%s: no answer within the bound", req.Type)
		return wire.Msg{}
	}
	open := do(wire.Msg{Type: wire.TypeOpenSession, TTL: 5 * time.Second})
	if open.Code != wire.CodeOK || open.Session == 0 {
		t.Fatalf("open session: %+v", open)
	}
	acq := do(wire.Msg{Type: wire.TypeAcquire, Session: open.Session, Name: name})
	if acq.Code != wire.CodeOK || acq.Token == 0 {
		t.Fatalf("acquire %s: %+v", name, acq)
	}
	rel := do(wire.Msg{Type: wire.TypeRelease, Session: open.Session, Name: name, Token: acq.Token})
	if rel.Code != wire.CodeOK {
		t.Fatalf("release %s: %+v", name, rel)
	}
	t.Logf("acquired and released %s with token %d through node %s", name, acq.Token, addr)
}
