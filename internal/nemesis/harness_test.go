//go:build unix

package nemesis

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// The lockd binary and the certificates are made once per test binary, in
// a directory removed at the end (TestMain).
var (
	shared    string // directory of the binary and the certificates
	setupOnce sync.Once
	setupErr  error
	lockdBin  string
	certsDir  string
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(workerEnv); cfg != "" {
		os.Exit(workerMain(cfg))
	}
	dir, err := os.MkdirTemp("", "lockd-nemesis-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// setup builds lockd and makes a CA, five node certificates and a client
// certificate.
func setup(t *testing.T) {
	t.Helper()
	setupOnce.Do(func() {
		lockdBin = filepath.Join(shared, "lockd")
		if b := os.Getenv("LOCKD_NEMESIS_LOCKD"); b != "" {
			// A prebuilt binary (a long run against a fixed build).
			lockdBin = b
		} else {
			cmd := exec.Command(goTool(), "build", "-o", lockdBin, "github.com/lockd/lockd/cmd/lockd")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				setupErr = fmt.Errorf("build lockd: %v\n%s", err, b)
				return
			}
		}
		certsDir = filepath.Join(shared, "certs")
		runs := [][]string{{"certs", "init", "--dir", certsDir}}
		for i := 1; i <= 5; i++ {
			runs = append(runs, []string{"certs", "node", strconv.Itoa(i), "--dir", certsDir})
		}
		runs = append(runs, []string{"certs", "client", "nemesis", "--dir", certsDir})
		for _, args := range runs {
			if b, err := exec.Command(lockdBin, args...).CombinedOutput(); err != nil {
				setupErr = fmt.Errorf("lockd %s: %v\n%s", strings.Join(args, " "), err, b)
				return
			}
		}
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// proc is a child process (a node or a worker) in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

func startProc(t *testing.T, dir, name, bin string, env []string, stdout, stdin *os.File, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true"), env...)
	p.cmd.Stderr = logf
	p.cmd.Stdout = logf
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	if stdin != nil {
		p.cmd.Stdin = stdin
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) signal(sig syscall.Signal) {
	if p.exited() {
		return
	}
	syscall.Kill(-p.pid(), sig)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill kills the process (continuing it first, should it be stopped) and
// waits for it.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	p.signal(syscall.SIGCONT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// cluster is N `lockd run` processes, each behind a Proxy.
type cluster struct {
	t       *testing.T
	dir     string
	n       int
	groups  int
	lease   time.Duration
	private []string // node i+1 listens here
	admin   []string // node i+1's admin port (metrics), for dumps on a hang
	proxies []*Proxy // node i+1's proxy: its address in --peers and for clients
	nodes   []*proc
	starts  []int
	workers []*workerProc // set by the run, for Classify
	opts    clusterOpts

	// held[i] holds node i+1's private UDP port while a kill fault has it
	// down (killNode), so that no other process takes it before the
	// restart (guarded by heldMu).
	heldMu sync.Mutex
	held   map[int]net.PacketConn

	portMu    sync.Mutex
	portCache map[int]string
	seen      []string // every client endpoint classified (guarded by portMu)
}

func (c *cluster) peers() string {
	var parts []string
	for i, p := range c.proxies {
		parts = append(parts, fmt.Sprintf("%d=%s", i+1, p.Addr()))
	}
	return strings.Join(parts, ",")
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, p := range c.proxies {
		eps = append(eps, p.Addr().String())
	}
	return eps
}

func freeUDPPort(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// clusterOpts are a run's extra node settings: environment per node (1..n)
// and flags for every node.
type clusterOpts struct {
	env  map[int][]string
	args []string
}

func freeTCPPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// dumpState writes what a hang leaves to look at into the run's
// directory: every node's metrics (per-identity refusals show as
// lockd_requests_total codes "limit" and "rate_limited") and the test
// process's goroutines (the proxies, the watcher, the harness's client).
func (c *cluster) dumpState() {
	hc := &http.Client{Timeout: 5 * time.Second}
	for i, a := range c.admin {
		resp, err := hc.Get("http://" + a + "/metrics")
		if err != nil {
			c.t.Logf("dump: node %d metrics: %v", i+1, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		os.WriteFile(filepath.Join(c.dir, fmt.Sprintf("metrics-n%d.txt", i+1)), b, 0o644)
	}
	if f, err := os.Create(filepath.Join(c.dir, "harness-goroutines.txt")); err == nil {
		pprof.Lookup("goroutine").WriteTo(f, 2)
		f.Close()
	}
}

// snapshotsInstalled counts, in the logs of node i's restarts (not its
// first start), the snapshots it installed from a peer.
func (c *cluster) snapshotsInstalled(i int) int {
	n := 0
	for k := 2; k <= c.starts[i]; k++ {
		b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("lockd-%d.%d.log", i+1, k)))
		if err == nil {
			n += strings.Count(string(b), `"msg":"installed a snapshot from a peer"`)
		}
	}
	return n
}

func startCluster(t *testing.T, dir string, n, groups int, lease time.Duration, opts clusterOpts) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: dir, n: n, groups: groups, lease: lease, portCache: map[int]string{}, opts: opts}
	for i := 0; i < n; i++ {
		addr := freeUDPPort(t)
		c.private = append(c.private, addr)
		ua, _ := net.ResolveUDPAddr("udp", addr)
		p, err := NewProxy(fmt.Sprintf("n%d", i+1), ua)
		if err != nil {
			t.Fatal(err)
		}
		p.Classify = c.classify
		p.Start()
		t.Cleanup(p.Close)
		c.proxies = append(c.proxies, p)
	}
	for range n {
		c.admin = append(c.admin, freeTCPPort(t))
	}
	c.nodes = make([]*proc, n)
	c.starts = make([]int, n)
	for i := range c.nodes {
		c.startNode(i)
	}
	return c
}

// killNode SIGKILLs node i+1, waits for it, and holds its private port
// until startNode starts it again: ports come from the ephemeral range, and
// another test binary asking for port 0 meanwhile could take it, so that
// the restarted node would exit with code 4 (seen once in the e2e suite).
func (c *cluster) killNode(i int) {
	c.nodes[i].kill()
	c.heldMu.Lock()
	defer c.heldMu.Unlock()
	if c.held == nil {
		c.held = map[int]net.PacketConn{}
		c.t.Cleanup(func() {
			c.heldMu.Lock()
			defer c.heldMu.Unlock()
			for _, pc := range c.held {
				pc.Close()
			}
		})
	}
	if c.held[i] != nil {
		return
	}
	for try := 0; try < 50; try++ {
		if pc, err := net.ListenPacket("udp", c.private[i]); err == nil {
			c.held[i] = pc
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Logf("node %d is down but its port %s cannot be held", i+1, c.private[i])
}

func (c *cluster) startNode(i int) {
	c.heldMu.Lock()
	if pc := c.held[i]; pc != nil {
		pc.Close() // just before lockd binds it
		delete(c.held, i)
	}
	c.heldMu.Unlock()
	c.starts[i]++
	name := fmt.Sprintf("lockd-%d.%d", i+1, c.starts[i])
	args := append([]string{"run",
		"--id", strconv.Itoa(i + 1), "--peers", c.peers(), "--listen", c.private[i],
		"--data-dir", filepath.Join(c.dir, "data", strconv.Itoa(i+1)), "--certs", certsDir,
		"--groups", strconv.Itoa(c.groups), "--lease", c.lease.String(), "--log-format", "json",
		"--admin", c.admin[i], "--admin-pprof=false"}, c.opts.args...)
	c.nodes[i] = startProc(c.t, c.dir, name, lockdBin, c.opts.env[i+1], nil, nil, args...)
}

// classify names the endpoint behind a source address: a node by its
// private port, a worker by the process that owns the socket (found in
// /proc), and "x" for anything else (the harness's own client).
func (c *cluster) classify(a *net.UDPAddr) string {
	for i, p := range c.private {
		if strings.HasSuffix(p, ":"+strconv.Itoa(a.Port)) {
			return fmt.Sprintf("n%d", i+1)
		}
	}
	c.portMu.Lock()
	defer c.portMu.Unlock()
	if who, ok := c.portCache[a.Port]; ok {
		return who
	}
	who := "x"
	inodes := socketInodes(a.Port)
	if len(inodes) > 0 {
		for _, w := range c.workerList() {
			if ownsSocket(w.p.pid(), inodes) {
				who = fmt.Sprintf("c%d", w.id)
				break
			}
		}
	}
	c.portCache[a.Port] = who
	c.seen = append(c.seen, who)
	return who
}

var workersMu sync.Mutex

func (c *cluster) workerList() []*workerProc {
	workersMu.Lock()
	defer workersMu.Unlock()
	return append([]*workerProc(nil), c.workers...)
}

// socketInodes returns the inodes of the UDP sockets bound to port.
func socketInodes(port int) map[string]bool {
	out := map[string]bool{}
	hex := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || !strings.HasSuffix(fs[1], hex) {
				continue
			}
			out[fs[9]] = true
		}
	}
	return out
}

func ownsSocket(pid int, inodes map[string]bool) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			return true
		}
	}
	return false
}

// workerProc is a worker client process and its record stream.
type workerProc struct {
	id    int
	p     *proc
	stdin io.WriteCloser
	recs  chan Rec
}

func (c *cluster) startWorker(t *testing.T, cfg workerConfig, res *Resource, all *recLog) *workerProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Endpoints = c.endpoints()
	cfg.CA = filepath.Join(certsDir, "ca.crt")
	cfg.Cert = filepath.Join(certsDir, "client-nemesis.crt")
	cfg.Key = filepath.Join(certsDir, "client-nemesis.key")
	cfg.Groups = c.groups
	raw, _ := json.Marshal(cfg)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w := &workerProc{id: cfg.ID, stdin: inW, recs: make(chan Rec, 1024)}
	w.p = startProc(t, c.dir, fmt.Sprintf("worker-%d", cfg.ID), self, []string{workerEnv + "=" + string(raw)}, pw, inR)
	pw.Close()
	inR.Close()
	t.Cleanup(func() { inW.Close() })
	go func() {
		defer close(w.recs)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r Rec
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			if r.T == "write" {
				res.Write(Write{Name: r.Name, Token: r.Token, Shared: r.Shared, Stale: r.Stale, W: r.W, Cts: r.Call})
				continue
			}
			all.add(r)
			select {
			case w.recs <- r:
			default: // only the command replies are waited for
			}
		}
	}()
	workersMu.Lock()
	c.workers = append(c.workers, w)
	workersMu.Unlock()
	return w
}

func (w *workerProc) send(cmd string) { fmt.Fprintln(w.stdin, cmd) }

// await waits for a record of type typ (hang guard d) and returns the
// records of type collect seen meanwhile.
func (w *workerProc) await(typ, collect string, d time.Duration) ([]Rec, bool) {
	var got []Rec
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-w.recs:
			if !ok {
				return got, false
			}
			if r.T == collect {
				got = append(got, r)
			}
			if r.T == typ {
				return append(got, r), true
			}
		case <-timer.C:
			return got, false
		}
	}
}

// recLog keeps every record of every worker.
type recLog struct {
	mu   sync.Mutex
	recs []Rec
}

func (l *recLog) add(r Rec) {
	l.mu.Lock()
	l.recs = append(l.recs, r)
	l.mu.Unlock()
}

func (l *recLog) all() []Rec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Rec(nil), l.recs...)
}

// newClient is the harness's own client (watcher, status checks).
func (c *cluster) newClient(ctx context.Context) (*client.Client, error) {
	return client.New(ctx, client.Config{Endpoints: c.endpoints(),
		CAFile: filepath.Join(certsDir, "ca.crt"), CertFile: filepath.Join(certsDir, "client-nemesis.crt"), KeyFile: filepath.Join(certsDir, "client-nemesis.key"),
		DialTimeout: 2 * time.Second, RequestTimeout: 3 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// watcher records the watch stream of every name.
type watcher struct {
	mu     sync.Mutex
	events []Event
}

func (w *watcher) run(ctx context.Context, cl *client.Client, name string) {
	for ctx.Err() == nil {
		start := now()
		ch, err := cl.Watch(ctx, name)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ev := range ch {
			e := Event{Name: name, Sid: ev.Session, Token: ev.Token, Shared: ev.Shared, At: now(), Start: start}
			switch ev.Kind {
			case client.EventGranted:
				e.Kind = "granted"
			case client.EventReleased:
				e.Kind = "released"
			case client.EventExpired:
				e.Kind = "expired"
			case client.EventSync:
				e.Kind = "sync"
				for _, h := range ev.Holders {
					e.Holders = append(e.Holders, Holder{Sid: h.Session, Token: h.Token, Shared: h.Shared})
				}
			default:
				continue
			}
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
		}
	}
}

func (w *watcher) all() []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Event(nil), w.events...)
}

// clients returns the distinct client endpoints the proxies have seen.
func (c *cluster) clients() []string {
	c.portMu.Lock()
	defer c.portMu.Unlock()
	s := slices.Clone(c.seen)
	slices.Sort(s)
	return slices.Compact(s)
}
