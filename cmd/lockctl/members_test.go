package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
)

// membersRules makes lockctl-test admin; "nobody" may only lock and read.
const membersRules = `{"rules": [
  {"name": "all", "effect": "allow", "actions": ["lock", "read"], "identities": ["*"], "prefixes": [""]},
  {"name": "ops", "effect": "allow", "actions": ["admin"], "identities": ["lockctl-test"], "prefixes": [""]}
]}`

// startMembersCluster starts three nodes with membersRules and returns the
// cluster and client config files for the admin and for "nobody".
func startMembersCluster(t *testing.T) (lc *localcluster.Cluster, admin, nobody string) {
	t.Helper()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	if err := os.WriteFile(rules, []byte(membersRules), 0o600); err != nil {
		t.Fatal(err)
	}
	lc, err := localcluster.Start(localcluster.Options{Groups: 4, Lease: time.Second, Dir: filepath.Join(dir, "cluster"),
		Tune: func(c *server.Config) { c.ACLFile = rules }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	ca := lc.CA()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	config := func(identity string) string {
		certPEM, keyPEM, err := ca.IssueClient(identity)
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteKeyPair(dir, identity, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, identity+".json")
		if err := client.WriteConfigFile(path, client.Config{Endpoints: lc.Endpoints(), CAFile: "ca.crt", CertFile: identity + ".crt", KeyFile: identity + ".key"}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return lc, config("lockctl-test"), config("nobody")
}

// listVoters runs members list --json and returns each group's voters.
func listVoters(t *testing.T, cfg string) map[uint32][]uint32 {
	t.Helper()
	code, out, errOut := lockctl(t, "--config", cfg, "--json", "members", "list")
	if code != exitOK {
		t.Fatalf("members list: exit %d\n%s%s", code, out, errOut)
	}
	got := map[uint32][]uint32{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var gm client.GroupMembers
		if err := json.Unmarshal([]byte(line), &gm); err != nil {
			t.Fatalf("members list --json line %q: %v", line, err)
		}
		for _, m := range gm.Members {
			if m.Voter {
				got[gm.Group] = append(got[gm.Group], m.ID)
			}
		}
	}
	return got
}

// TestCLIMembersAddRemoveList: lockctl members add, remove and list against
// real nodes, with --json, idempotent re-runs, usage errors (64) and a
// non-admin identity (6).
func TestCLIMembersAddRemoveList(t *testing.T) {
	lc, admin, nobody := startMembersCluster(t)
	want := func(ids ...uint32) {
		t.Helper()
		got := listVoters(t, admin)
		if len(got) != lc.Groups() {
			t.Fatalf("members list shows %d groups, want %d: %v", len(got), lc.Groups(), got)
		}
		for g, vs := range got {
			if !slices.Equal(vs, ids) {
				t.Fatalf("group %d: voters %v, want %v", g, vs, ids)
			}
		}
	}
	want(1, 2, 3)

	for _, args := range [][]string{
		{"members", "add", "x", "127.0.0.1:1"},
		{"members", "add", "5", "noport"},
		{"members", "add", "5"},
		{"members", "remove"},
		{"members", "replace", "1", "1", "127.0.0.1:1"},
		{"members", "frobnicate"},
	} {
		if code, _, errOut := lockctl(t, append([]string{"--config", admin}, args...)...); code != exitUsage {
			t.Errorf("lockctl %s: exit %d (%s), want %d", strings.Join(args, " "), code, errOut, exitUsage)
		}
	}
	if code, _, errOut := lockctl(t, "--config", nobody, "members", "list"); code != exitPermission || !strings.Contains(errOut, "nobody") {
		t.Fatalf("members list as a non-admin: exit %d (%s), want %d naming the identity", code, errOut, exitPermission)
	}
	if code, _, errOut := lockctl(t, "--config", nobody, "members", "remove", "3"); code != exitPermission {
		t.Fatalf("members remove as a non-admin: exit %d (%s), want %d", code, errOut, exitPermission)
	}

	i4, err := lc.Join()
	if err != nil {
		t.Fatal(err)
	}
	addr4 := lc.Node(i4).Addr
	code, out, errOut := lockctl(t, "--config", admin, "--timeout", "2m", "members", "add", "4", addr4)
	if code != exitOK || !strings.Contains(out, "added as a learner") || !strings.Contains(out, "promoted to voter") || !strings.Contains(out, "done: node 4 is a voter of every group") {
		t.Fatalf("members add 4: exit %d\n%s%s", code, out, errOut)
	}
	want(1, 2, 3, 4)
	code, out, errOut = lockctl(t, "--config", admin, "members", "add", "4", addr4)
	if code != exitOK || strings.Count(out, "already a voter") != lc.Groups() {
		t.Fatalf("members add 4 again: exit %d, want nothing to do in each group\n%s%s", code, out, errOut)
	}

	exited, exitErr := lc.Exited(0)
	code, out, errOut = lockctl(t, "--config", admin, "--json", "--timeout", "2m", "members", "remove", "1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || decodeLine(t, lines[len(lines)-1])["kind"] != "done" {
		t.Fatalf("members remove 1: exit %d\n%s%s", code, out, errOut)
	}
	for _, l := range lines {
		if m := decodeLine(t, l); m["kind"] == "member-step" && num(m, "node") != 1 {
			t.Fatalf("a step about another node: %s", l)
		}
	}
	want(2, 3, 4)
	select {
	case <-exited:
		if err := exitErr(); !strings.Contains(err.Error(), "removed from the cluster") {
			t.Fatalf("node 1 stopped with %v, want its removal", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("node 1 did not stop within a minute of its removal")
	}
}
