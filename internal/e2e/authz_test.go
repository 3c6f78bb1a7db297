//go:build unix

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

// The rules of the authorization tests: svc-a and svc-b lock and read
// everything but secret/, where only svc-a may go under secret/a/; ops (and
// the harness, e2e) are admins; svc-c is named by no rule; svc-p is named
// only through the unit of its certificate (lockd certs client --ou
// payments), which may lock and read under pay/. The limits are small so
// that the tests reach them.
const authzRules = `{
  "rules": [
    {"name": "services", "effect": "allow", "actions": ["lock", "read"], "identities": ["svc-a", "svc-b"], "prefixes": [""]},
    {"name": "no-secrets", "effect": "deny", "actions": ["lock", "read"], "identities": ["*"], "prefixes": ["secret/"]},
    {"name": "svc-a-secrets", "effect": "allow", "actions": ["lock", "read"], "identities": ["svc-a"], "prefixes": ["secret/a/"]},
    {"name": "payments-role", "effect": "allow", "actions": ["lock", "read"], "units": ["payments"], "prefixes": ["pay/"]},
    {"name": "ops", "effect": "allow", "actions": ["admin", "read", "lock"], "identities": ["ops", "e2e"], "prefixes": [""]}
  ],
  "limits": {"connections": 6, "streams_per_connection": 3, "sessions": 5, "held_locks": 4, "queued_waits": 2,
             "watches": 3, "master_watches": 2, "requests_per_second": 1000, "request_burst": 2000},
  "per_identity_limits": {
    "e2e": {"connections": 64, "streams_per_connection": 16, "sessions": 100, "held_locks": 100, "queued_waits": 100,
            "watches": 100, "master_watches": 16, "requests_per_second": 1000, "request_burst": 2000},
    "slow": {"connections": 4, "streams_per_connection": 4, "sessions": 5, "held_locks": 5, "queued_waits": 5,
             "watches": 5, "master_watches": 2, "requests_per_second": 0.001, "request_burst": 3}
  }
}
`

// authzCluster is a 3-node cluster started with authzRules, and TLS
// configs for each identity.
type authzCluster struct {
	*cluster
	acl    string
	ids    map[string]*tls.Config
	master string // address of group 0's master
}

func startAuthzCluster(t *testing.T) *authzCluster {
	if testing.Short() {
		t.Skip("starts lockd processes")
	}
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl.json")
	if err := os.WriteFile(acl, []byte(authzRules), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LOCKD_ACL", acl)
	c := startCluster(t, 1, time.Second)
	t.Cleanup(c.stopAll)
	ac := &authzCluster{cluster: c, acl: acl, ids: map[string]*tls.Config{}}
	for _, name := range []string{"svc-a", "svc-b", "svc-c", "ops", "slow"} {
		ac.ids[name] = issueIdentity(t, c, name)
	}
	ac.ids["svc-p"] = issueIdentity(t, c, "svc-p", "--ou", "payments")
	masters := c.waitServing(20 * time.Second)
	ac.master = c.addrs[masters[0]-1]
	return ac
}

// eprobe is a raw client stream that also collects events.
type eprobe struct {
	t      testing.TB
	who    string
	conn   *quicnet.Conn
	st     *quicnet.Stream
	mu     sync.Mutex
	calls  map[uint64]chan wire.Msg
	events chan wire.Msg
	reqID  atomic.Uint64
	closed chan struct{}
	seq    atomic.Uint64
	client uint64
}

func (ac *authzCluster) dial(who string) *eprobe {
	ac.t.Helper()
	p, err := ac.tryDial(who)
	if err != nil {
		ac.t.Fatalf("%s: dial: %v", who, err)
	}
	return p
}

func (ac *authzCluster) tryDial(who string) (*eprobe, error) {
	ctx, cancel := context.WithTimeout(context.Background(), patient(5*time.Second))
	defer cancel()
	conn, err := quicnet.Dial(ctx, ac.master, ac.ids[who])
	if err != nil {
		return nil, err
	}
	p := &eprobe{t: ac.t, who: who, conn: conn, calls: map[uint64]chan wire.Msg{}, events: make(chan wire.Msg, 1024),
		client: uint64(time.Now().UnixNano()) & (1<<62 - 1)}
	if err := p.newStream(); err != nil {
		conn.Close()
		return nil, err
	}
	ac.t.Cleanup(func() { conn.Close() })
	return p, nil
}

func (p *eprobe) newStream() error {
	ctx, cancel := context.WithTimeout(context.Background(), patient(5*time.Second))
	defer cancel()
	st, err := p.conn.OpenStream(ctx)
	if err != nil {
		return err
	}
	p.st = st
	p.closed = make(chan struct{})
	go p.readLoop(st, p.closed)
	return nil
}

func (p *eprobe) readLoop(st *quicnet.Stream, closed chan struct{}) {
	defer close(closed)
	for {
		b, err := st.ReadFrame()
		if err != nil {
			return
		}
		m, err := wire.Decode(b)
		if err != nil {
			continue
		}
		if m.Type == wire.TypeEvent {
			select {
			case p.events <- m:
			default:
			}
			continue
		}
		p.mu.Lock()
		ch := p.calls[m.ReqID]
		delete(p.calls, m.ReqID)
		p.mu.Unlock()
		if ch != nil {
			ch <- m
		} else if m.ReqID == 0 {
			select {
			case p.events <- m: // an answer to a frame the node could not read
			default:
			}
		}
	}
}

// call sends req (with a fresh ReqID, and a fresh Seq for commands) and
// returns the answer.
func (p *eprobe) call(req wire.Msg) wire.Msg {
	p.t.Helper()
	m, err := p.tryCall(req)
	if err != nil {
		p.t.Fatalf("%s: %v: %v", p.who, req.Type, err)
	}
	return m
}

func (p *eprobe) tryCall(req wire.Msg) (wire.Msg, error) {
	req.ReqID = p.reqID.Add(1)
	if req.Client == 0 {
		req.Client = p.client
	}
	if req.Seq == 0 {
		req.Seq = p.seq.Add(1)
	}
	ch := make(chan wire.Msg, 1)
	p.mu.Lock()
	p.calls[req.ReqID] = ch
	p.mu.Unlock()
	if err := p.st.WriteFrame(wire.Append(nil, &req)); err != nil {
		return wire.Msg{}, err
	}
	select {
	case m := <-ch:
		return m, nil
	case <-p.closed:
		return wire.Msg{}, fmt.Errorf("stream closed")
	case <-time.After(patient(10 * time.Second)):
		return wire.Msg{}, fmt.Errorf("no answer")
	}
}

func (p *eprobe) open() uint64 {
	p.t.Helper()
	m := p.call(wire.Msg{Type: wire.TypeOpenSession, TTL: time.Minute})
	// A master may stop serving for a moment right after the first
	// election (startAuthzCluster waited until it served a read): "no
	// master right now" is an answer a client retries, as the client
	// library does, and these tests are about who may do what.
	for deadline := time.Now().Add(patient(20 * time.Second)); m.Code == wire.CodeNotMaster && m.Hint == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		m = p.call(wire.Msg{Type: wire.TypeOpenSession, TTL: time.Minute})
	}
	if m.Code != wire.CodeOK || m.Session == 0 {
		p.t.Fatalf("%s: open session: %v %s", p.who, m.Code, m.Err)
	}
	return m.Session
}

func (p *eprobe) acquire(session uint64, name string, wait bool) wire.Msg {
	var f wire.Flags
	if wait {
		f = wire.FlagWait
	}
	return p.call(wire.Msg{Type: wire.TypeAcquire, Session: session, Name: name, Flags: f})
}

func wantCode(t *testing.T, what string, m wire.Msg, code wire.Code, text string) {
	t.Helper()
	if m.Code != code || !strings.Contains(m.Err, text) {
		t.Errorf("%s: got %v %q, want %v with %q", what, m.Code, m.Err, code, text)
	}
}

// TestAuthzHijacksRefused replays each attack of issue 10 against real
// processes with real certificates.
func TestAuthzHijacksRefused(t *testing.T) {
	ac := startAuthzCluster(t)
	a, b := ac.dial("svc-a"), ac.dial("svc-b")
	sa := a.open()
	held := a.acquire(sa, "secret/a/db", false)
	if held.Code != wire.CodeOK {
		t.Fatalf("svc-a acquire: %v %s", held.Code, held.Err)
	}
	msg := fmt.Sprintf("session %d belongs to svc-a; you are svc-b", sa)

	// Renew (re-acquire), release, keep-alive, close, acquire under svc-a's session.
	wantCode(t, "release by svc-b", b.call(wire.Msg{Type: wire.TypeRelease, Session: sa, Name: "secret/a/db", Token: held.Token}), wire.CodePermission, "")
	wantCode(t, "release of a free name by svc-b", b.call(wire.Msg{Type: wire.TypeRelease, Session: sa, Name: "x", Token: 1}), wire.CodePermission, msg)
	wantCode(t, "acquire under svc-a's session", b.acquire(sa, "x", false), wire.CodePermission, msg)
	wantCode(t, "close svc-a's session", b.call(wire.Msg{Type: wire.TypeCloseSession, Session: sa}), wire.CodePermission, msg)
	ka := b.call(wire.Msg{Type: wire.TypeKeepAlive, KeepAlives: []wire.KeepAliveItem{{Group: 0, Session: sa}}})
	if len(ka.KeepAlives) != 1 || ka.KeepAlives[0].Code != wire.CodePermission {
		t.Errorf("keep-alive of svc-a's session by svc-b: %+v", ka.KeepAlives)
	}
	// Nothing changed: svc-a still holds its lock under the same token.
	st := a.call(wire.Msg{Type: wire.TypeLockStatus, Name: "secret/a/db"})
	if len(st.Holders) != 1 || st.Holders[0].Session != sa || st.Holders[0].Token != held.Token {
		t.Fatalf("svc-a's lock changed: %+v", st.Holders)
	}

	// The waiter steal: svc-a queues for "w" (held by its other session);
	// svc-b re-sends the same Acquire; the grant still goes to svc-a.
	sh := a.open()
	if m := a.acquire(sh, "w", false); m.Code != wire.CodeOK {
		t.Fatalf("hold w: %v", m.Code)
	}
	if m := a.acquire(sa, "w", true); m.Code != wire.CodeQueued {
		t.Fatalf("queue w: %v %s", m.Code, m.Err)
	}
	wantCode(t, "svc-b re-sends svc-a's queued acquire", b.acquire(sa, "w", true), wire.CodePermission, msg)
	wantCode(t, "svc-b cancels svc-a's wait", b.call(wire.Msg{Type: wire.TypeCancelWait, Session: sa, Name: "w"}), wire.CodePermission, msg)
	if m := a.call(wire.Msg{Type: wire.TypeCloseSession, Session: sh}); m.Code != wire.CodeOK {
		t.Fatalf("close holder: %v", m.Code)
	}
	select {
	case ev := <-a.events:
		if ev.Kind != wire.EventGranted || ev.Session != sa || ev.Name != "w" {
			t.Errorf("svc-a's event: %+v", ev)
		}
	case <-time.After(patient(10 * time.Second)):
		t.Errorf("svc-a never got its grant")
	}
	select {
	case ev := <-b.events:
		t.Errorf("svc-b got an event for svc-a's wait: %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}

	// Another's client id with a huge Ack forgets nothing of svc-a's, and
	// replaying svc-a's (client, seq) opens svc-b's own session.
	a2 := ac.dial("svc-a")
	a2.client, b.client = 4242, 4242
	first := a2.call(wire.Msg{Type: wire.TypeOpenSession, TTL: time.Minute, Seq: 1})
	if first.Code != wire.CodeOK {
		t.Fatalf("svc-a open: %v", first.Code)
	}
	replay := b.call(wire.Msg{Type: wire.TypeOpenSession, TTL: time.Minute, Seq: 1})
	if replay.Code != wire.CodeOK || replay.Session == first.Session || replay.Flags&wire.FlagDuplicate != 0 {
		t.Errorf("svc-b replaying svc-a's command: %+v", replay)
	}
	huge := b.call(wire.Msg{Type: wire.TypeOpenSession, TTL: time.Minute, Seq: 1 << 40, Ack: 1 << 40})
	if huge.Code != wire.CodeOK {
		t.Errorf("svc-b open with a huge ack: %v %s", huge.Code, huge.Err)
	}
	if m := a2.call(wire.Msg{Type: wire.TypeAcquire, Session: first.Session, Name: "after-ack", Seq: 2, Ack: 1}); m.Code != wire.CodeOK {
		t.Errorf("svc-a after svc-b's huge ack: %v %s", m.Code, m.Err)
	}
	// Sessions count per identity across client ids (cap 5 in the rules;
	// svc-b has 2 open).
	var last wire.Msg
	for i := 0; i < 4; i++ {
		b.client = uint64(9000 + i)
		last = b.call(wire.Msg{Type: wire.TypeOpenSession, TTL: time.Minute})
	}
	wantCode(t, "svc-b's 6th session", last, wire.CodeLimit, "sessions per identity: 5")
}

// TestAuthzMatrix covers each request type for the session's owner,
// another identity, an admin, and an identity no rule names.
func TestAuthzMatrix(t *testing.T) {
	ac := startAuthzCluster(t)
	owner := ac.dial("svc-a")
	roles := map[string]*eprobe{"owner": owner, "other": ac.dial("svc-b"), "admin": ac.dial("ops"), "norule": ac.dial("svc-c")}
	const ok, perm = wire.CodeOK, wire.CodePermission
	type row struct {
		req  string
		want map[string]wire.Code
	}
	all := func(c wire.Code) map[string]wire.Code {
		return map[string]wire.Code{"owner": c, "other": c, "admin": c, "norule": c}
	}
	ownerOnly := map[string]wire.Code{"owner": ok, "other": perm, "admin": perm, "norule": perm}
	ownerOrAdmin := map[string]wire.Code{"owner": ok, "other": perm, "admin": ok, "norule": perm}
	readers := map[string]wire.Code{"owner": ok, "other": ok, "admin": ok, "norule": perm}
	rows := []row{
		{"OpenSession", all(ok)},
		{"CloseSession", ownerOrAdmin},
		{"KeepAlive", ownerOnly},
		{"Acquire", ownerOnly},
		{"Release", ownerOrAdmin},
		{"CancelWait", ownerOnly},
		{"Validate", readers},
		{"LockStatus", readers},
		{"Watch", readers},
		{"ClusterStatus", map[string]wire.Code{"owner": perm, "other": perm, "admin": ok, "norule": perm}},
	}
	n := 0
	for _, r := range rows {
		for _, role := range []string{"owner", "other", "admin", "norule"} {
			n++
			p := roles[role]
			// A fresh session of svc-a that holds one lock and waits for another.
			s := owner.open()
			name := fmt.Sprintf("m/%d", n)
			g := owner.acquire(s, name, false)
			blocker := owner.open()
			owner.acquire(blocker, name+"/q", false)
			if m := owner.acquire(s, name+"/q", true); m.Code != wire.CodeQueued {
				t.Fatalf("setup: %v %s", m.Code, m.Err)
			}
			var m wire.Msg
			switch r.req {
			case "OpenSession":
				m = p.call(wire.Msg{Type: wire.TypeOpenSession, TTL: time.Minute})
			case "CloseSession":
				m = p.call(wire.Msg{Type: wire.TypeCloseSession, Session: s})
			case "KeepAlive":
				m = p.call(wire.Msg{Type: wire.TypeKeepAlive, KeepAlives: []wire.KeepAliveItem{{Session: s}}})
				if len(m.KeepAlives) == 1 {
					m.Code = m.KeepAlives[0].Code // the reason is in m.Err
				}
			case "Acquire":
				m = p.acquire(s, name+"/new", false)
			case "Release":
				m = p.call(wire.Msg{Type: wire.TypeRelease, Session: s, Name: name, Token: g.Token})
			case "CancelWait":
				m = p.call(wire.Msg{Type: wire.TypeCancelWait, Session: s, Name: name + "/q"})
			case "Validate":
				m = p.call(wire.Msg{Type: wire.TypeValidate, Name: name, Token: g.Token})
			case "LockStatus":
				m = p.call(wire.Msg{Type: wire.TypeLockStatus, Name: name})
			case "Watch":
				m = p.call(wire.Msg{Type: wire.TypeWatch, Name: name})
				p.call(wire.Msg{Type: wire.TypeUnwatch, Name: name})
			case "ClusterStatus":
				m = p.call(wire.Msg{Type: wire.TypeClusterStatus})
			}
			if m.Code != r.want[role] {
				t.Errorf("%s by %s (%s): got %v %q, want %v", r.req, role, p.who, m.Code, m.Err, r.want[role])
			}
			if m.Code == perm && m.Err == "" {
				t.Errorf("%s by %s: a permission error without a reason", r.req, role)
			}
			if m.Code == perm && r.req != "ClusterStatus" && r.req != "Validate" && r.req != "LockStatus" && r.req != "Watch" {
				// Refused: nothing changed.
				st := owner.call(wire.Msg{Type: wire.TypeLockStatus, Name: name})
				if len(st.Holders) != 1 || st.Holders[0].Token != g.Token {
					t.Errorf("%s by %s changed the lock: %+v", r.req, role, st.Holders)
				}
			}
			// Clean up (sessions count against svc-a's cap of 5).
			owner.call(wire.Msg{Type: wire.TypeCloseSession, Session: s})
			owner.call(wire.Msg{Type: wire.TypeCloseSession, Session: blocker})
			if r.req == "OpenSession" && m.Code == ok {
				p.call(wire.Msg{Type: wire.TypeCloseSession, Session: m.Session})
			}
		}
	}
}

// TestAuthzRulesFile checks allow, deny and prefix overlap, a SIGHUP
// reload, and a bad file refused with the old rules kept.
func TestAuthzRulesFile(t *testing.T) {
	ac := startAuthzCluster(t)
	a, b, c := ac.dial("svc-a"), ac.dial("svc-b"), ac.dial("svc-c")
	sa, sb, sc := a.open(), b.open(), c.open()
	wantCode(t, "svc-a locks secret/a/ (longer allow beats the deny)", a.acquire(sa, "secret/a/k", false), wire.CodeOK, "")
	wantCode(t, "svc-a under secret/ elsewhere", a.acquire(sa, "secret/b/k", false), wire.CodePermission, `rule "no-secrets" denies svc-a to lock "secret/b/k"`)
	wantCode(t, "svc-b under secret/a/", b.acquire(sb, "secret/a/k", false), wire.CodePermission, `rule "no-secrets" denies svc-b to lock`)
	wantCode(t, "svc-b reads secret/", b.call(wire.Msg{Type: wire.TypeLockStatus, Name: "secret/a/k"}), wire.CodePermission, "no-secrets")
	wantCode(t, "svc-b locks elsewhere", b.acquire(sb, "public/k", false), wire.CodeOK, "")
	wantCode(t, "svc-c, named by no rule", c.acquire(sc, "public/c", false), wire.CodePermission, `no access rule allows svc-c to lock "public/c"`)

	// A role: svc-p is named by no rule, only by its certificate's unit.
	p := ac.dial("svc-p")
	sp := p.open()
	wantCode(t, "svc-p (unit payments) under pay/", p.acquire(sp, "pay/k", false), wire.CodeOK, "")
	wantCode(t, "svc-p reads pay/", p.call(wire.Msg{Type: wire.TypeLockStatus, Name: "pay/k"}), wire.CodeOK, "")
	wantCode(t, "svc-p elsewhere", p.acquire(sp, "public/p", false), wire.CodePermission, `no access rule allows svc-p to lock "public/p"`)
	wantCode(t, "svc-c (no unit) under pay/", c.acquire(sc, "pay/c", false), wire.CodePermission, `no access rule allows svc-c to lock "pay/c"`)

	// Reload: let svc-c lock under public/.
	newRules := strings.Replace(authzRules, `"identities": ["svc-a", "svc-b"], "prefixes": [""]},`,
		`"identities": ["svc-a", "svc-b"], "prefixes": [""]},
    {"name": "svc-c-public", "effect": "allow", "actions": ["lock"], "identities": ["svc-c"], "prefixes": ["public/"]},`, 1)
	if err := os.WriteFile(ac.acl, []byte(newRules), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range ac.nodes {
		p.signal(syscall.SIGHUP)
	}
	for _, p := range ac.nodes {
		mustLog(t, p, `access rules reloaded`)
	}
	wantCode(t, "svc-c after the reload", c.acquire(sc, "public/c", false), wire.CodeOK, "")

	// A bad file is refused with its line, and the rules stay.
	if err := os.WriteFile(ac.acl, []byte("{\n  \"rules\": [\n    {\"name\": \"x\", \"effect\": \"maybe\", \"actions\": [\"lock\"], \"identities\": [\"*\"], \"prefixes\": [\"\"]}\n  ]\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range ac.nodes {
		p.signal(syscall.SIGHUP)
	}
	for _, p := range ac.nodes {
		mustLog(t, p, `access rules not reloaded.*line 3: rule 1 \(\\"x\\"\): effect is \\"maybe\\"`)
	}
	wantCode(t, "svc-c keeps its access after a bad file", c.acquire(sc, "public/c2", false), wire.CodeOK, "")
	wantCode(t, "svc-b still denied secret/", b.acquire(sb, "secret/x", false), wire.CodePermission, "no-secrets")

	// A file changed and reloaded on node 3 only: lockctl status shows each
	// node's digest and warns that they differ.
	l := &lockctlRunner{t: t, bin: build(t, "lockctl"), env: []string{"LOCKD_CONFIG=" + ac.config}}
	out, errOut, code := l.run(patient(20*time.Second), "status")
	if code != 0 || strings.Contains(errOut, "different access rules") || strings.Count(out, rulesDigest(newRules)) != 3 {
		t.Errorf("lockctl status with the same rules everywhere: exit %d, want 3 nodes with %s and no warning\n%s%s", code, rulesDigest(newRules), out, errOut)
	}
	third := strings.Replace(newRules, `"rules": [`, `"rules": [
    {"name": "node-3-only", "effect": "allow", "actions": ["read"], "identities": ["svc-c"], "prefixes": [""]},`, 1)
	if err := os.WriteFile(ac.acl, []byte(third), 0o600); err != nil {
		t.Fatal(err)
	}
	ac.nodes[2].signal(syscall.SIGHUP)
	mustLog(t, ac.nodes[2], `access rules reloaded.*`+rulesDigest(third))
	out, errOut, code = l.run(patient(20*time.Second), "status")
	if code != 0 || strings.Count(out, rulesDigest(newRules)) != 2 || strings.Count(out, rulesDigest(third)) != 1 ||
		!strings.Contains(errOut, "warning: the nodes enforce different access rules") || !strings.Contains(errOut, "node 3: "+rulesDigest(third)) ||
		!strings.Contains(errOut, "send each lockd SIGHUP") {
		t.Errorf("lockctl status after a reload on node 3 only: exit %d, want two nodes with %s, node 3 with %s and a warning\n%s%s",
			code, rulesDigest(newRules), rulesDigest(third), out, errOut)
	}
}

// rulesDigest is the digest a node reports for a rules file (the first 6
// bytes of its SHA-256, as server.ACL.Hash).
func rulesDigest(file string) string {
	sum := sha256.Sum256([]byte(file))
	return hex.EncodeToString(sum[:6])
}

// TestAuthzLimits checks each per-identity cap: one past it gets an error
// naming the cap, and the identity's other work goes on.
func TestAuthzLimits(t *testing.T) {
	ac := startAuthzCluster(t)
	b := ac.dial("svc-b")
	s1, s2 := b.open(), b.open()
	for i := 0; i < 4; i++ {
		if m := b.acquire(s1, fmt.Sprintf("h/%d", i), false); m.Code != wire.CodeOK {
			t.Fatalf("hold %d: %v %s", i, m.Code, m.Err)
		}
	}
	wantCode(t, "5th held lock", b.acquire(s2, "h/4", false), wire.CodeLimit, "held_locks per identity: 4")
	a := ac.dial("svc-a")
	sa := a.open()
	a.acquire(sa, "q/0", false)
	a.acquire(sa, "q/1", false)
	a.acquire(sa, "q/2", false)
	b.call(wire.Msg{Type: wire.TypeRelease, Session: s1, Name: "h/3", Token: b.call(wire.Msg{Type: wire.TypeLockStatus, Name: "h/3"}).Holders[0].Token})
	wantCode(t, "1st wait", b.acquire(s2, "q/0", true), wire.CodeQueued, "")
	wantCode(t, "2nd wait", b.acquire(s2, "q/1", true), wire.CodeQueued, "")
	wantCode(t, "3rd wait", b.acquire(s2, "q/2", true), wire.CodeLimit, "queued_waits per identity: 2")

	for i := 0; i < 3; i++ {
		wantCode(t, "watch", b.call(wire.Msg{Type: wire.TypeWatch, Name: fmt.Sprintf("w/%d", i)}), wire.CodeOK, "")
	}
	wantCode(t, "watch the same name again", b.call(wire.Msg{Type: wire.TypeWatch, Name: "w/0"}), wire.CodeOK, "")
	wantCode(t, "4th watch", b.call(wire.Msg{Type: wire.TypeWatch, Name: "w/3"}), wire.CodeLimit, "watches per identity: 3")
	b.call(wire.Msg{Type: wire.TypeUnwatch, Name: "w/0"})
	wantCode(t, "watch after an unwatch", b.call(wire.Msg{Type: wire.TypeWatch, Name: "w/3"}), wire.CodeOK, "")
	wantCode(t, "master watch 1", b.call(wire.Msg{Type: wire.TypeWatchMasters}), wire.CodeOK, "")
	wantCode(t, "master watch 2", b.call(wire.Msg{Type: wire.TypeWatchMasters}), wire.CodeOK, "")
	wantCode(t, "master watch 3", b.call(wire.Msg{Type: wire.TypeWatchMasters}), wire.CodeLimit, "master_watches per identity: 2")

	// Too-large metadata: a limit with the number, not "internal".
	big := make([]byte, 40<<10)
	wantCode(t, "40 KiB of metadata", b.call(wire.Msg{Type: wire.TypeAcquire, Session: s2, Name: "meta", Metadata: big}), wire.CodeLimit, "too large: the limit is 4096 bytes")

	// Streams per connection: the 4th stream's first request is refused.
	for i := 0; i < 2; i++ {
		if err := b.newStream(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.newStream(); err != nil {
		t.Fatal(err)
	}
	m, err := b.tryCall(wire.Msg{Type: wire.TypeLockStatus, Name: "x"})
	if err != nil || m.Code != wire.CodeLimit || !strings.Contains(m.Err, "streams_per_connection: 3") {
		t.Errorf("4th stream: %v %v %q", err, m.Code, m.Err)
	}

	// Connections: svc-b has 1; 5 more are fine, the 7th is refused.
	for i := 0; i < 5; i++ {
		p := ac.dial("svc-b")
		p.call(wire.Msg{Type: wire.TypeLockStatus, Name: "x"})
	}
	p, err := ac.tryDial("svc-b")
	if err == nil {
		m, err = p.tryCall(wire.Msg{Type: wire.TypeLockStatus, Name: "x"})
	}
	if err != nil || m.Code != wire.CodeLimit || !strings.Contains(m.Err, "connections per identity: 6") {
		t.Errorf("7th connection: %v %v %q", err, m.Code, m.Err)
	}
	// svc-a is not affected by svc-b's caps.
	wantCode(t, "svc-a meanwhile", a.call(wire.Msg{Type: wire.TypeLockStatus, Name: "x"}), wire.CodeOK, "")

	// Request rate: "slow" has a burst of 3 and next to no refill.
	slow := ac.dial("slow")
	for i := 0; i < 3; i++ {
		slow.call(wire.Msg{Type: wire.TypeLockStatus, Name: "x"})
	}
	wantCode(t, "4th request of slow", slow.call(wire.Msg{Type: wire.TypeLockStatus, Name: "x"}), wire.CodeOverloaded, "requests_per_second")

	// A malformed frame gets an error frame, then the stream closes.
	bad := ac.dial("svc-a")
	if err := bad.st.WriteFrame([]byte{0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-bad.events:
		if m.Code != wire.CodeBadRequest || !strings.Contains(m.Err, "malformed request") {
			t.Errorf("malformed frame answered %v %q", m.Code, m.Err)
		}
	case <-time.After(patient(10 * time.Second)):
		t.Errorf("no error frame for a malformed frame")
	}
	select {
	case <-bad.closed:
	case <-time.After(patient(10 * time.Second)):
		t.Errorf("the stream stayed open after a malformed frame")
	}
}

// mustLog waits for a line of p's log (stderr) that matches re.
func mustLog(t *testing.T, p *proc, re string) {
	t.Helper()
	if _, ok := p.err.wait(regexp.MustCompile(re), patient(10*time.Second)); !ok {
		t.Fatalf("%s: no log line matching %q\n%s", p.name, re, tail(p.err.String(), 20))
	}
}
