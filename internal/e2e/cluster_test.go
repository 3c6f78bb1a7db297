//go:build unix

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
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

// Exit codes of lockd (cmd/lockd/main.go).
const (
	lockdExitSetup    = 3
	lockdExitAddrBusy = 4
)

// cluster is three `lockd run` processes on 127.0.0.1.
type cluster struct {
	t        testing.TB
	lockd    string
	dir      string
	certs    string
	groups   int
	lease    time.Duration
	addrs    []string // UDP address of node i+1
	admins   []string // admin HTTP address of node i+1
	nodes    []*proc  // current process of node i+1
	restarts []int
	// held[i] holds node i+1's UDP port while the node is down (holdPort),
	// so that no other process on the machine (a parallel test binary
	// binding port 0) takes it before the node restarts on it.
	held   []net.PacketConn
	config string // lockctl config file
	tls    *tls.Config
}

// freePorts returns n UDP ports and n TCP ports on 127.0.0.1 that were free
// a moment ago. Another process may take one before lockd binds it; the
// caller sees exit code 4 then and retries with new ports.
func freePorts(t testing.TB, n int) (udp, tcp []int) {
	t.Helper()
	for i := 0; i < n; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		udp = append(udp, pc.LocalAddr().(*net.UDPAddr).Port)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		tcp = append(tcp, ln.Addr().(*net.TCPAddr).Port)
	}
	return udp, tcp
}

// startCluster makes certificates with `lockd certs` and starts 3 nodes.
func startCluster(t testing.TB, groups int, lease time.Duration) *cluster {
	t.Helper()
	c := &cluster{t: t, lockd: build(t, "lockd"), dir: testRoot(t), groups: groups, lease: lease}
	c.certs = filepath.Join(c.dir, "certs")
	c.lockdOK("certs-init", "certs", "init", "--dir", c.certs)
	for i := 1; i <= 3; i++ {
		c.lockdOK(fmt.Sprintf("certs-node-%d", i), "certs", "node", strconv.Itoa(i), "--dir", c.certs)
	}
	c.lockdOK("certs-client", "certs", "client", "e2e", "--dir", c.certs)
	var err error
	c.tls, err = pki.LoadClientTLSConfig(filepath.Join(c.certs, "ca.crt"),
		filepath.Join(c.certs, "client-e2e.crt"), filepath.Join(c.certs, "client-e2e.key"))
	if err != nil {
		t.Fatal(err)
	}

	for attempt := 1; ; attempt++ {
		udp, tcp := freePorts(t, 3)
		c.addrs, c.admins = nil, nil
		for i := range udp {
			c.addrs = append(c.addrs, fmt.Sprintf("127.0.0.1:%d", udp[i]))
			c.admins = append(c.admins, fmt.Sprintf("127.0.0.1:%d", tcp[i]))
		}
		c.nodes = make([]*proc, 3)
		c.restarts = make([]int, 3)
		for i := range c.nodes {
			c.startNode(i)
		}
		// A port taken between freePorts and the bind shows as exit 4
		// within moments; anything else is a real failure.
		busy := false
		time.Sleep(300 * time.Millisecond)
		for i, p := range c.nodes {
			if code, ok := p.waitExit(0); ok {
				if code == lockdExitAddrBusy && attempt < 3 {
					busy = true
					continue
				}
				t.Fatalf("node %d exited with code %d at start:\n%s", i+1, code, tail(p.err.String(), 20))
			}
		}
		if !busy {
			break
		}
		t.Logf("a port was taken by someone else; retrying with new ports (attempt %d)", attempt+1)
		for _, p := range c.nodes {
			p.signal(9)
			p.mustExit(5 * time.Second)
		}
		os.RemoveAll(filepath.Join(c.dir, "data"))
	}

	cfg, _ := json.Marshal(map[string]any{
		"endpoints": c.addrs,
		"ca":        filepath.Join(c.certs, "ca.crt"),
		"cert":      filepath.Join(c.certs, "client-e2e.crt"),
		"key":       filepath.Join(c.certs, "client-e2e.key"),
	})
	c.config = filepath.Join(c.dir, "lockctl.json")
	if err := os.WriteFile(c.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// lockdOK runs a lockd command that must succeed quickly.
func (c *cluster) lockdOK(name string, args ...string) string {
	c.t.Helper()
	out, errOut, code := run(c.t, name, c.lockd, nil, 20*time.Second, args...)
	if code != 0 {
		c.t.Fatalf("lockd %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (c *cluster) peers() string {
	var parts []string
	for i, a := range c.addrs {
		parts = append(parts, fmt.Sprintf("%d=%s", i+1, a))
	}
	return strings.Join(parts, ",")
}

// kill SIGKILLs node i+1, waits until it is gone and holds its port until
// it is started again.
func (c *cluster) kill(i int) {
	c.t.Helper()
	c.nodes[i].signal(syscall.SIGKILL)
	c.nodes[i].mustExit(30 * time.Second)
	c.holdPort(i)
}

// holdPort binds node i+1's UDP port, whose process has exited, until
// startNode starts it again. Ports come from the ephemeral range
// (freePorts), so while the node is down another test binary asking for
// port 0 can get it, and the restarted node would exit with code 4; seen
// once in the suite under load (TestWalkthroughFailover, session 6). The
// kernel frees a dead process's socket at once; if the port cannot be had
// within a second, someone took it already, and the restart will say so.
func (c *cluster) holdPort(i int) {
	c.t.Helper()
	if c.held == nil {
		c.held = make([]net.PacketConn, len(c.addrs))
		c.t.Cleanup(func() {
			for _, pc := range c.held {
				if pc != nil {
					pc.Close()
				}
			}
		})
	}
	if c.held[i] != nil {
		return
	}
	var err error
	for try := 0; try < 50; try++ {
		if c.held[i], err = net.ListenPacket("udp", c.addrs[i]); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Logf("node %d is down but its port %s cannot be held: %v", i+1, c.addrs[i], err)
}

// startNode starts (or restarts, on the same address and data dir) node i+1.
// Its flags come from the environment, to check the LOCKD_* fall-backs.
func (c *cluster) startNode(i int) {
	c.t.Helper()
	if c.held != nil && c.held[i] != nil {
		c.held[i].Close() // just before lockd binds it
		c.held[i] = nil
	}
	name := fmt.Sprintf("lockd-%d", i+1)
	if c.restarts[i] > 0 {
		name = fmt.Sprintf("lockd-%d.%d", i+1, c.restarts[i])
	}
	c.restarts[i]++
	env := []string{
		"LOCKD_ID=" + strconv.Itoa(i+1),
		"LOCKD_PEERS=" + c.peers(),
		"LOCKD_DATA_DIR=" + filepath.Join(c.dir, "data", strconv.Itoa(i+1)),
		"LOCKD_CERTS=" + c.certs,
		"LOCKD_GROUPS=" + strconv.Itoa(c.groups),
		"LOCKD_ADMIN=" + c.admins[i],
		"LOCKD_LOG_LEVEL=debug",
	}
	c.nodes[i] = startProc(c.t, name, c.lockd, env, "run", "--lease", c.lease.String(), "--log-format", "json")
}

// masters asks every running node for the group masters and returns, per
// group, the node (1-based) that the running nodes agree on (0: none or no
// agreement yet).
func (c *cluster) masters() []int {
	out := make([]int, c.groups)
	seen := make([]map[int]int, c.groups)
	for g := range seen {
		seen[g] = map[int]int{}
	}
	asked := 0
	for i, addr := range c.addrs {
		if c.nodes[i].exited() {
			continue
		}
		resp, err := probeCall(addr, c.tls, wire.Msg{Type: wire.TypeClusterStatus}, 500*time.Millisecond)
		if err != nil {
			continue
		}
		asked++
		for _, m := range resp.Masters {
			if int(m.Group) < c.groups && m.Master != 0 {
				seen[m.Group][int(m.Master)]++
			}
		}
	}
	for g := range out {
		for m, n := range seen[g] {
			if n == asked && asked > 0 {
				out[g] = m
			}
		}
	}
	return out
}

// serving reports whether group g answers a linearizable read at the node
// the cluster names as its master: the proof that it is served again.
func (c *cluster) serving(g uint32, master int) bool {
	if master == 0 || c.nodes[master-1].exited() {
		return false
	}
	name := nameInGroup("probe", g, c.groups)
	resp, err := probeCall(c.addrs[master-1], c.tls,
		wire.Msg{Type: wire.TypeLockStatus, Group: g, Name: name}, 500*time.Millisecond)
	return err == nil && resp.Code == wire.CodeOK
}

// waitServing waits until every group has a master that serves it, and
// returns the masters (1-based node per group).
func (c *cluster) waitServing(timeout time.Duration) []int {
	c.t.Helper()
	timeout = patient(timeout)
	deadline := time.Now().Add(timeout)
	for {
		masters := c.masters()
		ok := true
		for g, m := range masters {
			if !c.serving(uint32(g), m) {
				ok = false
				break
			}
		}
		if ok {
			return masters
		}
		if time.Now().After(deadline) {
			c.dumpLogs()
			c.t.Fatalf("not every group served within %v: masters %v", timeout, masters)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dumpLogs prints the tail of every node's log.
func (c *cluster) dumpLogs() {
	for i, p := range c.nodes {
		c.t.Logf("node %d (exited=%v) stderr tail:\n%s", i+1, p.exited(), tail(p.err.String(), 15))
	}
}

// stopAll stops every node with SIGTERM and checks that each one stops
// cleanly (exit 0) within a bound and logged its stop as JSON.
func (c *cluster) stopAll() {
	c.t.Helper()
	for _, p := range c.nodes {
		p.signal(syscall.SIGTERM)
	}
	for i, p := range c.nodes {
		code, ok := p.waitExit(patient(10 * time.Second))
		if !ok {
			c.t.Errorf("node %d did not stop within %v of SIGTERM", i+1, patient(10*time.Second))
			continue
		}
		if code != 0 {
			c.t.Errorf("node %d exited %d after SIGTERM, want 0:\n%s", i+1, code, tail(p.err.String(), 10))
		}
		c.holdPort(i)
		last := tail(p.err.String(), 1)
		var rec map[string]any
		if err := json.Unmarshal([]byte(last), &rec); err != nil || rec["msg"] != "lockd node stopped" {
			c.t.Errorf("node %d's last log line is not the JSON stop record: %q", i+1, last)
		}
	}
}

// waitWaiters waits until lock name has at least n waiters, as its group's
// master reports it.
func (c *cluster) waitWaiters(name string, n int, timeout time.Duration) {
	c.t.Helper()
	timeout = patient(timeout)
	g := wire.GroupOf(name, c.groups)
	deadline := time.Now().Add(timeout)
	var last wire.Msg
	for time.Now().Before(deadline) {
		if m := c.masters()[g]; m != 0 {
			resp, err := probeCall(c.addrs[m-1], c.tls, wire.Msg{Type: wire.TypeLockStatus, Group: g, Name: name}, 500*time.Millisecond)
			if err == nil && resp.Code == wire.CodeOK && int(resp.Waiters) >= n {
				return
			}
			last = resp
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("lock %s has no %d waiters within %v: last status %+v", name, n, timeout, last)
}

// waitLockctlMasters waits until `lockctl --json status` shows a master for
// every group.
func (c *cluster) waitLockctlMasters(l *lockctlRunner, timeout time.Duration) {
	c.t.Helper()
	timeout = patient(timeout)
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		out, errOut, code := l.run(10*time.Second, "--json", "status")
		last = out + errOut
		var st struct {
			Masters []struct {
				Group int `json:"group"`
				Node  int `json:"node"`
			} `json:"masters"`
		}
		if code == 0 && json.Unmarshal([]byte(out), &st) == nil {
			have := map[int]bool{}
			for _, m := range st.Masters {
				if m.Node != 0 {
					have[m.Group] = true
				}
			}
			if len(have) == c.groups {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("lockctl status shows no master for every group within %v:\n%s", timeout, last)
}
