//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/nemesis"
	"github.com/lockd/lockd/internal/wire"
)

// lockdExitRemoved is the exit code of a node that left the cluster: its
// removal is in force and it stops by itself (`lockctl members remove`).
const lockdExitRemoved = 8

// membersRules: every client may lock and read; the harness's identity
// (e2e) is also an admin, which `lockctl members` needs.
const membersRules = `{
  "rules": [
    {"name": "everyone", "effect": "allow", "actions": ["lock", "read"], "identities": ["*"], "prefixes": [""]},
    {"name": "operators", "effect": "allow", "actions": ["admin", "read", "lock"], "identities": ["e2e"], "prefixes": [""]}
  ],
  "per_identity_limits": {
    "e2e": {"connections": 256, "streams_per_connection": 64, "sessions": 1000, "held_locks": 1000, "queued_waits": 1000,
            "watches": 100, "master_watches": 64, "requests_per_second": 100000, "request_burst": 100000}
  }
}
`

// TestRollingReplacementRealProcesses is issue 11: a 3-node cluster under
// steady lock traffic replaces every node one by one (1 by 4, 2 by 5, 3 by
// 6) with `lockd run --join` and `lockctl members replace`, with no lost
// lock and no mutual-exclusion violation, judged by a fenced resource.
//
// Workers are Go clients in the test process; each loops: acquire one of a
// few names (waiting while it is held), write to the fenced resource a few
// times with the lock's token, release. Five of them, on three shared
// names, have a client config that lists all six addresses. One more, on
// names of its own (roll-first3-*, one per group), lists nodes 1-3 only, as the config of a
// client started before the replacements does: a running client follows
// membership changes (client package doc), so it must make progress, on
// its first session, after every replacement, also once nodes 1-3 are all
// gone, and it is judged like the others. (Before the client followed the
// members, it completed no operation after node 3 left and lost its
// session.)
//
// Judged at the end: no holder lost its lock or session; every grant was
// released by its holder or fenced (its token is below a later accepted
// one); the resource accepted no token lower than one it had accepted, no
// two holders' accepted writes interleave or overlap in time, and no holder
// that kept its lock had a write refused; the traffic completed operations
// in every phase (before, during and after each replacement), the worker
// on nodes 1-3 too;
// `lockctl members list` shows the survivors and the new node as the only
// voters of every group after each replacement, and exactly 4, 5, 6 at the
// end; every node's own lock table shows the same holder of each name; each
// removed node logged its removal and exited with 8, and node 1 started
// again on its data dir exits with 8 at once.
//
// The writes are also judged against the workers' own holds (every write
// between Acquire returning and Release being called, and the next grant
// of a name after the previous holder called Release): the resource alone
// cannot see a write after a release that lands before the next holder's
// first write.
func TestRollingReplacementRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real processes; skipped with -short")
	}
	since(t)
	const groups = 4
	lease := 2 * time.Second
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl.json")
	if err := os.WriteFile(acl, []byte(membersRules), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every lockd the test starts, the joiners too, reads the rules.
	t.Setenv("LOCKD_ACL", acl)
	lockctlBin := build(t, "lockctl")
	c := startCluster(t, groups, lease)
	rc := &rollingCluster{cluster: c}
	for id := 4; id <= 6; id++ {
		c.lockdOK(fmt.Sprintf("certs-node-%d", id), "certs", "node", strconv.Itoa(id), "--dir", c.certs)
	}
	rc.reserve()
	allAddrs := append(slices.Clone(c.addrs), rc.nextAddrs...)
	cfgAll := rc.writeConfig("clients-all.json", allAddrs)
	cfgFirst := rc.writeConfig("clients-first3.json", c.addrs[:3])
	c.waitServing(20 * time.Second)
	t.Logf("%v: every group served", since(t))
	l := &lockctlRunner{t: t, bin: lockctlBin, env: []string{"LOCKD_CONFIG=" + cfgAll}}

	// Traffic: 5 workers on 3 names, and the first-three-only worker on
	// a name of its own.
	tr := newTraffic(t)
	names := []string{"roll-a", "roll-b", "roll-c"}
	for w := 1; w <= 5; w++ {
		tr.start(w, cfgAll, names, true)
	}
	// Its names span every group, so that its session does too: the old
	// client was stranded once the master of one of its groups was among
	// the nodes it knew when the last of them left.
	const first3 = 9
	var names3 []string
	for i := 0; len(names3) < groups; i++ {
		n := fmt.Sprintf("roll-first3-%d", i)
		if int(wire.GroupOf(n, groups)) == len(names3) {
			names3 = append(names3, n)
		}
	}
	tr.start(first3, cfgFirst, names3, true)
	tr.first3 = first3
	finalNames := append(slices.Clone(names), names3...)
	t.Logf("%v: workers started", since(t))
	tr.waitProgress("before any replacement", 100)
	t.Logf("%v: 100 operations done before any replacement", since(t))

	// lockctl members exists only with membership (branch member).
	out, errOut, code := l.run(20*time.Second, "members", "--help")
	if code != 0 || !strings.Contains(out+errOut, "replace") {
		tr.stop()
		t.Logf("%v: workers stopped", since(t))
		rc.finish(tr, names, []int{1, 2, 3})
		rc.stopLive()
		t.Skipf("lockctl has no `members` command here (exit %d): the traffic and checks ran on a fixed cluster, the replacements did not\n%s%s",
			code, tail(out, 5), tail(errOut, 5))
	}

	for k, old := range []int{1, 2, 3} {
		nw := old + 3
		t.Logf("%v: replacing %d by %d", since(t), old, nw)
		tr.setPhase(fmt.Sprintf("replacing %d by %d", old, nw))
		members := rc.liveIDs()
		rc.startJoiner(nw, members)
		began := time.Now()
		out, errOut, code := l.run(120*time.Second, "--timeout", "120s", "members", "replace", strconv.Itoa(old), strconv.Itoa(nw), rc.addrOf(nw))
		if code != 0 {
			c.dumpLogs()
			t.Fatalf("lockctl members replace %d %d %s: exit %d\n%s%s", old, nw, rc.addrOf(nw), code, out, errOut)
		}
		t.Logf("replace %d by %d: lockctl returned after %v", old, nw, time.Since(began).Round(time.Millisecond))
		// The removed node stops by itself once its removal is in force.
		if got := c.nodes[old-1].mustExit(20 * time.Second); got != lockdExitRemoved {
			t.Errorf("node %d exited %d after its removal, want %d:\n%s", old, got, lockdExitRemoved, tail(c.nodes[old-1].err.String(), 15))
		}
		t.Logf("node %d exited %d, %v after lockctl members replace began", old, c.nodes[old-1].code, c.nodes[old-1].end.Sub(began).Round(time.Millisecond))
		if !mustRe(`removed from the cluster`).MatchString(c.nodes[old-1].err.String()) {
			t.Errorf("node %d did not log its removal before it exited:\n%s", old, tail(c.nodes[old-1].err.String(), 10))
		}
		c.waitServing(20 * time.Second)
		t.Logf("%v: every group served by nodes %v", since(t), rc.liveIDs())
		rc.checkVoters(l, rc.liveIDs())
		tr.setPhase(fmt.Sprintf("after replacement %d (%d by %d)", k+1, old, nw))
		tr.waitProgress(tr.phaseName(), 50)
		t.Logf("%v: 50 operations done after the replacement", since(t))
		// The worker configured with nodes 1-3 alone follows the members.
		tr.waitWorker(first3, tr.phaseName(), 5)
		t.Logf("%v: the worker on nodes 1-3 did 5 operations after the replacement", since(t))
	}
	tr.stop()
	t.Logf("%v: workers stopped", since(t))

	// Exactly 4, 5, 6 vote in every group.
	rc.checkVoters(l, []int{4, 5, 6})
	rc.finish(tr, finalNames, []int{4, 5, 6})

	// A removed node started again on its data dir exits with 8 at once:
	// it never votes again (README, "Removing a node").
	c.startNode(0)
	if got := c.nodes[0].mustExit(10 * time.Second); got != lockdExitRemoved {
		t.Errorf("removed node 1 restarted on its data dir exited %d, want %d:\n%s", got, lockdExitRemoved, tail(c.nodes[0].err.String(), 10))
	}
	rc.stopLive()
}

var testStarts sync.Map // testing.TB -> time.Time

// since is how long test t has run, for the log.
func since(t testing.TB) time.Duration {
	v, _ := testStarts.LoadOrStore(t, time.Now())
	return time.Since(v.(time.Time)).Round(time.Millisecond)
}

// rollingCluster is a cluster whose membership changes: nodes 4 to 6 join
// on addresses picked at the start.
type rollingCluster struct {
	*cluster
	nextAddrs, nextAdmins []string      // of nodes 4, 5, 6
	held                  [][]io.Closer // their ports, held until they start
}

func (rc *rollingCluster) addrOf(id int) string {
	if id <= 3 {
		return rc.addrs[id-1]
	}
	return rc.nextAddrs[id-4]
}

// writeConfig writes a client config file with the harness's (admin)
// identity and the given endpoints.
func (rc *rollingCluster) writeConfig(name string, endpoints []string) string {
	rc.t.Helper()
	cfg, _ := json.Marshal(map[string]any{
		"endpoints": endpoints,
		"ca":        filepath.Join(rc.certs, "ca.crt"),
		"cert":      filepath.Join(rc.certs, "client-e2e.crt"),
		"key":       filepath.Join(rc.certs, "client-e2e.key"),
	})
	p := filepath.Join(rc.dir, name)
	if err := os.WriteFile(p, cfg, 0o600); err != nil {
		rc.t.Fatal(err)
	}
	return p
}

// liveIDs returns the nodes that run, by id.
func (rc *rollingCluster) liveIDs() []int {
	var ids []int
	for i, p := range rc.nodes {
		if p != nil && !p.exited() {
			ids = append(ids, i+1)
		}
	}
	return ids
}

// startJoiner starts brand-new node id on an empty data dir with --join;
// --peers lists the current members and itself.
func (rc *rollingCluster) startJoiner(id int, members []int) {
	rc.t.Helper()
	// The cluster's helpers (masters, waitServing, dumpLogs) walk addrs
	// and nodes by index: node id is index id-1.
	for len(rc.nodes) < id {
		rc.addrs = append(rc.addrs, rc.nextAddrs[len(rc.nodes)-3])
		rc.admins = append(rc.admins, rc.nextAdmins[len(rc.nodes)-3])
		rc.restarts = append(rc.restarts, 0)
		rc.nodes = append(rc.nodes, nil)
	}
	for attempt := 1; ; attempt++ {
		var peers []string
		for _, m := range members {
			peers = append(peers, fmt.Sprintf("%d=%s", m, rc.addrOf(m)))
		}
		peers = append(peers, fmt.Sprintf("%d=%s", id, rc.addrOf(id)))
		// The ports were held since the start; let go of them just
		// before the node binds them.
		rc.release(id)
		name := fmt.Sprintf("lockd-%d", id)
		if attempt > 1 {
			name = fmt.Sprintf("lockd-%d.%d", id, attempt)
		}
		p := startProc(rc.t, name, rc.lockd, nil, "run",
			"--id", strconv.Itoa(id), "--listen", rc.addrOf(id), "--peers", strings.Join(peers, ","), "--join",
			"--data-dir", filepath.Join(rc.dir, "data", strconv.Itoa(id)), "--certs", rc.certs,
			"--groups", strconv.Itoa(rc.groups), "--admin", rc.nextAdmins[id-4],
			"--lease", rc.lease.String(), "--log-format", "json", "--log-level", "debug")
		rc.nodes[id-1] = p
		// A bad flag or a taken port shows within moments.
		code, ok := p.waitExit(500 * time.Millisecond)
		if !ok {
			return
		}
		if code != lockdExitAddrBusy || attempt == 3 {
			rc.t.Fatalf("node %d (--join, peers %s) exited %d at start:\n%s", id, strings.Join(peers, ","), code, tail(p.err.String(), 20))
		}
		// Someone took a port in the moment between: new ones. The
		// workers' config keeps the old address; they reach the node
		// through the others all the same.
		udp, tcp := freePorts(rc.t, 1)
		rc.nextAddrs[id-4] = fmt.Sprintf("127.0.0.1:%d", udp[0])
		rc.nextAdmins[id-4] = fmt.Sprintf("127.0.0.1:%d", tcp[0])
		rc.addrs[id-1], rc.admins[id-1] = rc.nextAddrs[id-4], rc.nextAdmins[id-4]
		os.RemoveAll(filepath.Join(rc.dir, "data", strconv.Itoa(id)))
		rc.t.Logf("node %d: a port was taken by someone else; retrying on %s (attempt %d)", id, rc.addrOf(id), attempt+1)
	}
}

// reserve picks and holds a UDP port (the node's) and a TCP port (its
// admin page) for each of nodes 4, 5, 6, until release.
func (rc *rollingCluster) reserve() {
	rc.t.Helper()
	for i := 0; i < 3; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			rc.t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			rc.t.Fatal(err)
		}
		rc.held = append(rc.held, []io.Closer{pc, ln})
		rc.nextAddrs = append(rc.nextAddrs, pc.LocalAddr().String())
		rc.nextAdmins = append(rc.nextAdmins, ln.Addr().String())
	}
	rc.t.Cleanup(func() {
		for id := 4; id <= 6; id++ {
			rc.release(id)
		}
	})
}

// release lets go of the ports held for node id.
func (rc *rollingCluster) release(id int) {
	for _, c := range rc.held[id-4] {
		c.Close()
	}
	rc.held[id-4] = nil
}

// stopLive stops the nodes still running with SIGTERM; each must stop
// cleanly. (stopAll would take the removed nodes' exit 8 for a failure.)
func (rc *rollingCluster) stopLive() {
	for _, p := range rc.nodes {
		if p != nil {
			p.signal(syscall.SIGTERM)
		}
	}
	for i, p := range rc.nodes {
		if p == nil {
			continue
		}
		code, ok := p.waitExit(patient(10 * time.Second))
		if !ok {
			rc.t.Errorf("node %d did not stop within %v of SIGTERM", i+1, patient(10*time.Second))
		} else if code != 0 && code != lockdExitRemoved {
			rc.t.Errorf("node %d exited %d after SIGTERM, want 0:\n%s", i+1, code, tail(p.err.String(), 10))
		}
	}
}

// checkVoters checks that `lockctl --json members list` shows exactly want
// as the voters of every group, and no learner.
func (rc *rollingCluster) checkVoters(l *lockctlRunner, want []int) {
	rc.t.Helper()
	out, errOut, code := l.run(30*time.Second, "--json", "members", "list")
	if code != 0 {
		rc.t.Errorf("lockctl --json members list: exit %d\n%s%s", code, out, errOut)
		return
	}
	voters, learners, err := parseMembersList(out)
	if err != nil {
		rc.t.Errorf("lockctl --json members list: %v\n%s", err, out)
		return
	}
	for g := 0; g < rc.groups; g++ {
		got, ok := voters[g]
		if !ok {
			rc.t.Errorf("members list shows no voters for group %d:\n%s", g, out)
			continue
		}
		if !slices.Equal(got, want) || len(learners[g]) > 0 {
			rc.t.Errorf("group %d: voters %v, learners %v; want voters %v and no learner", g, got, learners[g], want)
		}
	}
	rc.t.Logf("lockctl members list: voters %v", voters)
}

// parseMembersList reads `lockctl --json members list`: one JSON object per
// group per line, {"group": G, "pending": bool, "members": [{"id": N,
// "voter": bool, ...}]} (cmd/lockctl/members.go). It also takes "voters"
// and "learners" lists, or a "role" per member, should the shape change;
// it says what it saw when it finds no group. A pending change is an error.
func parseMembersList(out string) (voters, learners map[int][]int, err error) {
	voters, learners = map[int][]int{}, map[int][]int{}
	var pend []int
	dec := json.NewDecoder(strings.NewReader(out))
	var vals []any
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("not JSON: %v", err)
		}
		vals = append(vals, v)
	}
	ids := func(v any) []int {
		var r []int
		list, _ := v.([]any)
		for _, it := range list {
			switch x := it.(type) {
			case float64:
				r = append(r, int(x))
			case map[string]any:
				if id, ok := x["id"].(float64); ok {
					r = append(r, int(id))
				} else if id, ok := x["node"].(float64); ok {
					r = append(r, int(id))
				}
			}
		}
		sort.Ints(r)
		return r
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case []any:
			for _, it := range x {
				walk(it)
			}
		case map[string]any:
			g, isGroup := x["group"].(float64)
			if isGroup {
				if vs, ok := x["voters"]; ok {
					voters[int(g)] = ids(vs)
					learners[int(g)] = ids(x["learners"])
					return
				}
				if ms, ok := x["members"].([]any); ok {
					if pending, _ := x["pending"].(bool); pending {
						pend = append(pend, int(g))
					}
					vs, ls := []int{}, []int{}
					for _, m := range ms {
						mo, _ := m.(map[string]any)
						id, _ := mo["id"].(float64)
						role, _ := mo["role"].(string)
						isVoter, hasVoter := mo["voter"].(bool)
						if role == "voter" || (hasVoter && isVoter) || (role == "" && !hasVoter) {
							vs = append(vs, int(id))
						} else {
							ls = append(ls, int(id))
						}
					}
					sort.Ints(vs)
					sort.Ints(ls)
					voters[int(g)], learners[int(g)] = vs, ls
					return
				}
			}
			for _, it := range x {
				walk(it)
			}
		}
	}
	for _, v := range vals {
		walk(v)
	}
	if len(voters) == 0 {
		return nil, nil, fmt.Errorf("no group with voters in it")
	}
	if len(pend) > 0 {
		return nil, nil, fmt.Errorf("groups %v have a change pending, not yet in force", pend)
	}
	return voters, learners, nil
}

// finish takes one last lock of every name (its token is above every
// earlier one), writes it to the resource, checks that every running node
// (members, by id) shows that holder and no other in its lock table, then
// releases and checks that every node shows the name free; then judges the
// traffic's history.
func (rc *rollingCluster) finish(tr *traffic, names []string, members []int) {
	t := rc.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patient(30*time.Second))
	defer cancel()
	var eps []string
	for _, id := range members {
		eps = append(eps, rc.addrOf(id))
	}
	cl, err := client.New(ctx, client.Config{Endpoints: eps, TLS: rc.tls})
	if err != nil {
		t.Fatalf("final client on nodes %v: %v", members, err)
	}
	defer cl.Close()
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: 20 * time.Second})
	if err != nil {
		t.Fatalf("final session: %v", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), patient(10*time.Second))
		defer cancel()
		sess.Close(ctx)
	}()
	final := map[string]*client.Lock{}
	for _, name := range names {
		lk, err := sess.Acquire(ctx, name, client.LockOptions{})
		if err != nil {
			t.Fatalf("final acquire of %s: %v", name, err)
		}
		final[name] = lk
		if !tr.res.Write(nemesis.Write{Name: name, Token: lk.Token(), W: 0, Cts: time.Now().UnixNano()}) {
			t.Errorf("the resource refused the final holder of %s (token %d)", name, lk.Token())
		}
	}
	// Every node's own table (a stale read: no redirect to the master)
	// converges on the same holder.
	for _, name := range names {
		want := []heldBy{{final[name].SessionID(), final[name].Token()}}
		rc.waitTable(name, members, want)
	}
	for _, name := range names {
		if err := final[name].Release(ctx); err != nil {
			t.Errorf("final release of %s: %v", name, err)
		}
	}
	for _, name := range names {
		rc.waitTable(name, members, nil)
	}
	t.Logf("%v: the lock tables of nodes %v agree on the final holder of %v, then on none", since(t), members, names)
	tr.judge(final)
}

// heldBy is a holder in a lock table: session and token.
type heldBy struct{ session, token uint64 }

// waitTable waits until every node in members shows exactly want as the
// holders of name in its own lock table.
func (rc *rollingCluster) waitTable(name string, members []int, want []heldBy) {
	rc.t.Helper()
	g := wire.GroupOf(name, rc.groups)
	timeout := patient(10 * time.Second)
	deadline := time.Now().Add(timeout)
	for _, id := range members {
		for {
			resp, err := probeCall(rc.addrOf(id), rc.tls,
				wire.Msg{Type: wire.TypeLockStatus, Group: g, Name: name, Flags: wire.FlagStale}, patient(time.Second))
			var got []heldBy
			for _, h := range resp.Holders {
				got = append(got, heldBy{h.Session, h.Token})
			}
			if err == nil && resp.Code == wire.CodeOK && slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				rc.t.Errorf("node %d's lock table shows holders %+v of %s (err %v, code %v), want %+v, still after %v",
					id, got, name, err, resp.Code, want, timeout)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func ts(n int64) string { return time.Unix(0, n).Format("15:04:05.000000") }

// lostSession is a session that ended under its worker.
type lostSession struct {
	w, phase int
	err      error
}

// grant is one granted acquire of a worker and what became of it.
type grant struct {
	w        int
	name     string
	token    uint64
	sid      uint64
	phase    int
	writes   int    // accepted writes
	refused  int    // refused writes
	released bool   // Release returned nil
	relErr   string // else why
	lost     bool   // the lock's Lost closed while it was held
	// from is when Acquire returned, until when the worker called
	// Release: the worker believed it held the lock in between, and
	// only then may it write.
	from, until int64
}

// traffic is the workers, the fenced resource and the history.
type traffic struct {
	t       *testing.T
	res     *nemesis.Resource
	quit    chan struct{}
	wg      sync.WaitGroup
	phase   atomic.Int32
	mu      sync.Mutex
	phases  []string
	done    map[int]map[int]int // phase -> worker -> completed ops (grant, writes, release)
	judged  map[int]bool        // worker -> its history is judged
	first3  int                 // the worker on nodes 1-3 alone (0: none)
	grants  []*grant
	errs    map[string]int // phase/worker: error -> count
	lostSes []lostSession  // sessions that ended under a worker
}

func newTraffic(t *testing.T) *traffic {
	tr := &traffic{t: t, res: &nemesis.Resource{}, quit: make(chan struct{}),
		phases: []string{"before any replacement"}, done: map[int]map[int]int{}, judged: map[int]bool{}, errs: map[string]int{}}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *traffic) phaseName() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.phases[tr.phase.Load()]
}

func (tr *traffic) setPhase(name string) {
	tr.mu.Lock()
	tr.phases = append(tr.phases, name)
	tr.phase.Store(int32(len(tr.phases) - 1))
	tr.mu.Unlock()
}

// judgedOps counts the completed operations of the judged workers in
// phase p.
func (tr *traffic) judgedOps(p int) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for w, k := range tr.done[p] {
		if tr.judged[w] {
			n += k
		}
	}
	return n
}

// waitWorker waits until worker w completed n operations in the current
// phase.
func (tr *traffic) waitWorker(w int, what string, n int) {
	tr.t.Helper()
	p := int(tr.phase.Load())
	ops := func() int {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.done[p][w]
	}
	timeout := patient(15 * time.Second)
	deadline := time.Now().Add(timeout)
	for ops() < n {
		if time.Now().After(deadline) {
			tr.t.Fatalf("%s: worker %d completed %d lock operations in %v, want %d; errors: %v", what, w, ops(), timeout, n, tr.errSummary())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitProgress waits until the judged workers completed n operations in
// the current phase.
func (tr *traffic) waitProgress(what string, n int) {
	tr.t.Helper()
	p := int(tr.phase.Load())
	timeout := patient(15 * time.Second)
	deadline := time.Now().Add(timeout)
	for tr.judgedOps(p) < n {
		if time.Now().After(deadline) {
			tr.t.Fatalf("%s: the workers completed %d lock operations in %v, want %d; errors: %v", what, tr.judgedOps(p), timeout, n, tr.errSummary())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tr *traffic) errSummary() map[string]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return maps.Clone(tr.errs)
}

func (tr *traffic) fail(w int, what string, err error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.errs[fmt.Sprintf("phase %d worker %d %s: %v", tr.phase.Load(), w, what, err)]++
}

// start starts worker w: a client on config cfg looping over names.
// judged says whether its history counts in the checks.
func (tr *traffic) start(w int, cfg string, names []string, judged bool) {
	tr.t.Helper()
	tr.mu.Lock()
	tr.judged[w] = judged
	tr.mu.Unlock()
	conf, err := client.LoadConfigFile(cfg)
	if err != nil {
		tr.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patient(10*time.Second))
	defer cancel()
	cl, err := client.New(ctx, conf)
	if err != nil {
		tr.t.Fatalf("worker %d: client: %v", w, err)
	}
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		defer cl.Close()
		tr.work(w, cl, names, judged)
	}()
}

func (tr *traffic) stopping() bool {
	select {
	case <-tr.quit:
		return true
	default:
		return false
	}
}

// stop stops the workers after their current operation and waits for them.
func (tr *traffic) stop() {
	tr.mu.Lock()
	select {
	case <-tr.quit:
	default:
		close(tr.quit)
	}
	tr.mu.Unlock()
	tr.wg.Wait()
}

// opTimeout bounds one acquire or release: generous, a hang guard. A
// worker that gives up records the error and goes on.
var opTimeout = patient(30 * time.Second)

func (tr *traffic) work(w int, cl *client.Client, names []string, judged bool) {
	// A judged worker finishes the operation it is in when told to stop,
	// so that its history is whole; an unjudged one (none now) gives it
	// up.
	base, stopBase := context.WithCancel(context.Background())
	defer stopBase()
	if !judged {
		go func() {
			select {
			case <-tr.quit:
				stopBase()
			case <-base.Done():
			}
		}()
	}
	// A session TTL well above a failover (lease 2s) and a replacement.
	const ttl = 10 * time.Second
	var sess *client.Session
	for i := 0; !tr.stopping(); i++ {
		if sess != nil {
			select {
			case <-sess.Done():
				tr.mu.Lock()
				tr.lostSes = append(tr.lostSes, lostSession{w: w, phase: int(tr.phase.Load()), err: sess.Err()})
				tr.mu.Unlock()
				sess = nil
			default:
			}
		}
		if sess == nil {
			ctx, cancel := context.WithTimeout(base, opTimeout)
			s, err := cl.NewSession(ctx, client.SessionOptions{TTL: ttl})
			cancel()
			if err != nil {
				tr.fail(w, "new session", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			sess = s
		}
		name := names[(i*7+w)%len(names)]
		ctx, cancel := context.WithTimeout(base, opTimeout)
		lk, err := sess.Acquire(ctx, name, client.LockOptions{})
		cancel()
		if err != nil {
			tr.fail(w, "acquire", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		p := int(tr.phase.Load())
		g := &grant{w: w, name: name, token: lk.Token(), sid: lk.SessionID(), phase: p, from: time.Now().UnixNano()}
		tr.mu.Lock()
		tr.grants = append(tr.grants, g)
		tr.mu.Unlock()
		for k := 0; k < 3; k++ {
			cts := time.Now().UnixNano()
			if isClosed(lk.Lost()) {
				g.lost = true
				break
			}
			if tr.res.Write(nemesis.Write{Name: name, Token: lk.Token(), W: w, Cts: cts}) {
				g.writes++
			} else {
				g.refused++
			}
			time.Sleep(time.Duration(1+k) * time.Millisecond)
		}
		if isClosed(lk.Lost()) {
			g.lost = true
		}
		g.until = time.Now().UnixNano()
		ctx, cancel = context.WithTimeout(base, opTimeout)
		err = lk.Release(ctx)
		cancel()
		tr.mu.Lock()
		if err != nil {
			g.relErr = err.Error()
		} else {
			// Counted in the phase in which it completed.
			g.released = true
			now := int(tr.phase.Load())
			if tr.done[now] == nil {
				tr.done[now] = map[int]int{}
			}
			tr.done[now][w]++
		}
		tr.mu.Unlock()
		if err != nil {
			tr.fail(w, "release", err)
		}
	}
	// An unjudged worker's session is left to expire rather than held up
	// closing.
	if sess != nil && judged {
		ctx, cancel := context.WithTimeout(context.Background(), patient(5*time.Second))
		sess.Close(ctx)
		cancel()
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// judge checks the history of the judged workers and the resource's log;
// final holds the last lock of each name, taken after the workers stopped.
func (tr *traffic) judge(final map[string]*client.Lock) {
	t := tr.t
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	// Operations per phase, the worker on nodes 1-3 apart.
	for p, name := range tr.phases {
		judged, first3 := 0, 0
		for w, n := range tr.done[p] {
			if w == tr.first3 {
				first3 += n
			} else if tr.judged[w] {
				judged += n
			}
		}
		t.Logf("phase %d (%s): %d lock operations by the workers on all six addresses, %d by the worker on nodes 1-3", p, name, judged, first3)
		if judged == 0 {
			t.Errorf("phase %d (%s): no lock operation completed", p, name)
		}
		if tr.first3 != 0 && first3 == 0 {
			t.Errorf("phase %d (%s): the worker whose client config lists nodes 1-3 only completed no lock operation: a running client must follow the members", p, name)
		}
	}
	if len(tr.errs) > 0 {
		t.Logf("worker errors (retried): %v", tr.errs)
	}
	var granted, released, lost, refused, fenced int
	for _, g := range tr.grants {
		if !tr.judged[g.w] {
			continue
		}
		granted++
		switch {
		case g.lost:
			lost++
			t.Errorf("worker %d lost its lock %s (token %d) in phase %d (%s)", g.w, g.name, g.token, g.phase, tr.phases[g.phase])
		case g.released:
			released++
		case final[g.name] != nil && final[g.name].Token() > g.token:
			fenced++
			t.Logf("worker %d's lock %s (token %d, phase %d) was not released (%s); fenced by the final token %d", g.w, g.name, g.token, g.phase, g.relErr, final[g.name].Token())
		default:
			t.Errorf("worker %d's lock %s (token %d, phase %d) was neither released (%s) nor fenced", g.w, g.name, g.token, g.phase, g.relErr)
		}
		if g.refused > 0 && !g.lost {
			if refused++; refused > 10 {
				continue
			}
			t.Errorf("worker %d held %s (token %d, phase %d) without losing it, yet the resource refused %d of its writes: another holder wrote with a larger token meanwhile",
				g.w, g.name, g.token, g.phase, g.refused)
		}
	}
	for _, s := range tr.lostSes {
		if !tr.judged[s.w] {
			t.Logf("the session of worker %d (not judged) ended in phase %d (%s): %v", s.w, s.phase, tr.phases[s.phase], s.err)
			continue
		}
		t.Errorf("the session of worker %d ended in phase %d (%s): %v", s.w, s.phase, tr.phases[s.phase], s.err)
	}
	if refused > 10 {
		t.Errorf("... %d holders with refused writes in all", refused)
	}
	t.Logf("grants to the judged workers %d: released %d, fenced %d, lost %d; holders with refused writes %d", granted, released, fenced, lost, refused)

	// The resource: tokens never go back, holders never interleave or
	// overlap in time.
	log := tr.res.Log()
	high := map[string]uint64{}
	accepted, lower := 0, 0
	for _, w := range log {
		if !w.Accepted {
			continue
		}
		accepted++
		if w.Token < high[w.Name] {
			if lower++; lower <= 10 {
				t.Errorf("the resource accepted %s token %d (worker %d) after token %d", w.Name, w.Token, w.W, high[w.Name])
			}
		}
		high[w.Name] = max(high[w.Name], w.Token)
	}
	if lower > 10 {
		t.Errorf("... %d accepted writes with a lower token in all", lower)
	}
	bad := nemesis.CheckMutex(log, nil)
	for i, b := range bad {
		if i == 10 {
			t.Errorf("... %d mutual-exclusion violations in all", len(bad))
			break
		}
		t.Error(b)
	}

	// Every write of a worker falls within its hold, [Acquire returned,
	// Release called]: a write outside is a holder that wrote after it
	// released (or before it was granted).
	type key struct {
		name  string
		token uint64
	}
	byKey := map[key]*grant{}
	byName := map[string][]*grant{}
	for _, g := range tr.grants {
		byKey[key{g.name, g.token}] = g
		byName[g.name] = append(byName[g.name], g)
	}
	outside := 0
	for _, w := range log {
		if w.W == 0 {
			continue // the final holder
		}
		g := byKey[key{w.Name, w.Token}]
		if g == nil || g.w != w.W {
			t.Errorf("worker %d wrote %s with token %d, which it was never granted", w.W, w.Name, w.Token)
			continue
		}
		if w.Cts < g.from || g.until != 0 && w.Cts > g.until {
			if outside++; outside <= 10 {
				t.Errorf("worker %d wrote %s with token %d at %s (accepted=%v) outside its hold [%s, %s]",
					w.W, w.Name, w.Token, ts(w.Cts), w.Accepted, ts(g.from), ts(g.until))
			}
		}
	}
	if outside > 10 {
		t.Errorf("... %d writes outside their holds in all", outside)
	}
	// Two holds of one name that did not lose their lock never overlap:
	// the next grant comes after the release was called.
	for name, gs := range byName {
		sort.Slice(gs, func(i, j int) bool { return gs[i].token < gs[j].token })
		for i := 1; i < len(gs); i++ {
			a, b := gs[i-1], gs[i]
			if a.lost || a.until == 0 || a.until < b.from {
				continue
			}
			t.Errorf("mutual exclusion: %s: worker %d held token %d until %s and worker %d was granted token %d at %s",
				name, a.w, a.token, ts(a.until), b.w, b.token, ts(b.from))
		}
	}
	t.Logf("the fenced resource accepted %d of %d writes", accepted, len(log))
}
