package server

import (
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/lease"
)

func ownerCounts(s, h, w int) lease.OwnerCounts {
	return lease.OwnerCounts{Sessions: s, Held: h, Waiting: w}
}

func TestRulesCheck(t *testing.T) {
	acl, _, err := ParseRules([]byte(`{"rules": [
  {"name": "all", "effect": "allow", "actions": ["lock", "read"], "identities": ["*"], "prefixes": [""]},
  {"name": "payments-role", "effect": "allow", "actions": ["lock"], "units": ["payments"], "prefixes": ["pay/"]},
  {"name": "no-pay", "effect": "deny", "actions": ["lock"], "identities": ["*"], "prefixes": ["pay/"]},
  {"name": "tie-allow", "effect": "allow", "actions": ["read"], "identities": ["svc-a"], "prefixes": ["t/"]},
  {"name": "tie-deny", "effect": "deny", "actions": ["read"], "identities": ["*"], "prefixes": ["t/"]},
  {"name": "node-1-reads", "effect": "allow", "actions": ["read"], "identities": ["node-1"], "prefixes": ["n/"]},
  {"name": "ops", "effect": "allow", "actions": ["admin"], "identities": ["ops"], "prefixes": [""]}
]}`))
	if err != nil {
		t.Fatal(err)
	}
	a := Identity{Name: "svc-a", Units: []string{"lockd-client"}}
	payer := Identity{Name: "svc-p", Units: []string{"payments"}}
	node := Identity{Name: "node-1", Node: true}
	for _, c := range []struct {
		id     Identity
		action Action
		name   string
		ok     bool
		why    string
	}{
		{a, ActionLock, "x", true, `rule "all"`},
		{a, ActionLock, "pay/1", false, `rule "no-pay" denies svc-a to lock "pay/1"`},
		{payer, ActionLock, "pay/1", false, `rule "no-pay"`}, // equal prefix: deny wins
		{a, ActionRead, "t/1", false, `rule "tie-deny"`},
		{a, ActionAdmin, "x", false, `no access rule allows svc-a to admin "x"`},
		{Identity{Name: "ops"}, ActionAdmin, "", true, `rule "ops"`},
		{node, ActionRead, "x", false, "no access rule allows node-1"}, // "*" does not cover nodes
		{node, ActionRead, "n/x", true, `rule "node-1-reads"`},
	} {
		d := acl.Check(c.id, c.action, c.name)
		if d.Allowed != c.ok || !strings.Contains(d.Why, c.why) {
			t.Errorf("%s %s %q: %+v, want %v %q", c.id.Name, c.action, c.name, d, c.ok, c.why)
		}
	}
	// Units: a role rule with a longer prefix than the deny wins.
	acl2, _, err := ParseRules([]byte(`{"rules": [
  {"name": "no-pay", "effect": "deny", "actions": ["lock"], "identities": ["*"], "prefixes": ["pay/"]},
  {"name": "payments-role", "effect": "allow", "actions": ["lock"], "units": ["payments"], "prefixes": ["pay/eu/"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := acl2.Check(payer, ActionLock, "pay/eu/1"); !d.Allowed {
		t.Errorf("role by OU: %+v", d)
	}
	if d := acl2.Check(a, ActionLock, "pay/eu/1"); d.Allowed {
		t.Errorf("svc-a without the role: %+v", d)
	}
	// No file: clients lock and read, nobody is admin, nodes nothing.
	var none *ACL = &ACL{}
	if !none.Check(a, ActionLock, "x").Allowed || !none.Check(a, ActionRead, "x").Allowed || none.Check(a, ActionAdmin, "").Allowed {
		t.Error("default rules")
	}
	if d := none.Check(node, ActionLock, "x"); d.Allowed || !strings.Contains(d.Why, "node certificate") {
		t.Errorf("node without rules: %+v", d)
	}
	if none.Hash() != "none" || acl.Hash() == acl2.Hash() {
		t.Error("hashes")
	}
}

func TestRulesBadFiles(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"{\n  \"rules\": [\n    {\"name\": \"x\",\n", "line 4"},
		{"{\"rules\": [{\"name\": \"x\", \"effect\": \"allow\", \"actions\": [\"lock\"], \"identities\": [\"*\"]}]}", `rule 1 ("x"): no prefixes`},
		{"{\n\"rules\": [\n{\"name\": \"x\", \"effect\": \"allow\", \"actions\": [\"write\"], \"identities\": [\"*\"], \"prefixes\": [\"\"]}]}", `line 3: rule 1 ("x"): unknown action "write"`},
		{"{\"rulez\": []}", `unknown field "rulez"`},
		{"{\"rules\": [], \"limits\": {\"sessions\": 0}}", "limits: connections is 0"},
		{"{\"rules\": [{\"name\": \"a\", \"effect\": \"allow\", \"actions\": [\"lock\"], \"identities\": [\"*\"], \"prefixes\": [\"\"]}, {\"name\": \"a\", \"effect\": \"deny\", \"actions\": [\"lock\"], \"identities\": [\"*\"], \"prefixes\": [\"\"]}]}", "same name"},
	} {
		_, _, err := ParseRules([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.doc, err, c.want)
		}
	}
}

func TestCommandClientSeparatesIdentities(t *testing.T) {
	seen := map[uint64]string{}
	for _, who := range []string{"svc-a", "svc-b", "svc-a\x00", ""} {
		for c := uint64(1); c < 50; c++ {
			id := commandClient(who, c)
			if id == 0 || id>>63 != 0 {
				t.Fatalf("%q %d -> %#x", who, c, id)
			}
			if prev, dup := seen[id]; dup {
				t.Fatalf("%q %d collides with %s", who, c, prev)
			}
			seen[id] = who
		}
	}
	if x, y := commandClient("svc-a", 7), commandClient("svc-a", 7); x != y {
		t.Fatal("not deterministic")
	}
}

func TestIdentityCapsAndRate(t *testing.T) {
	lim := DefaultIdentityLimits()
	lim.Sessions, lim.RequestBurst, lim.RequestsPerSecond = 2, 2, 1
	var st identityState
	if r := st.reserve("x", lim, ownerCounts(1, 0, 0)); r != "" {
		t.Fatal(r)
	}
	st.counts.Sessions = 1
	if r := st.reserve("x", lim, ownerCounts(1, 0, 0)); !strings.Contains(r, "sessions per identity: 2") {
		t.Fatalf("one past the cap: %q", r)
	}
	now := time.Unix(100, 0)
	for i, want := range []bool{true, true, false} {
		if got := st.allow(lim, now); got != want {
			t.Fatalf("request %d of a burst of 2: allowed %v", i+1, got)
		}
	}
	if !st.allow(lim, now.Add(time.Second)) {
		t.Fatal("refill")
	}
}
