//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// backupRules: e2e is admin (it may save backups); svc may lock and read
// but is not admin.
const backupRules = `{
  "rules": [
    {"name": "ops", "effect": "allow", "actions": ["admin", "read", "lock"], "identities": ["e2e"], "prefixes": [""]},
    {"name": "services", "effect": "allow", "actions": ["lock", "read"], "identities": ["svc"], "prefixes": [""]}
  ]
}
`

// Exit codes of lockd restore and lockctl (cmd/lockd/main.go,
// cmd/lockctl/main.go).
const (
	lockdExitBadBackup   = 7
	lockctlExitForbidden = 6
)

// TestBackupRestore (issue 11, backup and disaster recovery): a real 3-node
// cluster with held locks is backed up with lockctl snapshot save, grants
// more tokens after the backup, and is lost. Its backup seeds a new 3-node
// cluster with lockd restore: the same locks, holders and tokens, and every
// new grant takes a token above any the old cluster granted, after the
// backup too. A damaged backup, a non-empty data dir and a wrong group count
// are refused with their exit codes; a non-admin cannot save a backup.
func TestBackupRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	const groups = 4
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl.json")
	must(t, os.WriteFile(acl, []byte(backupRules), 0o600))
	t.Setenv("LOCKD_ACL", acl)
	c := startCluster(t, groups, time.Second)
	c.waitServing(20 * time.Second)
	lockctl := &lockctlRunner{t: t, bin: build(t, "lockctl"), env: []string{"LOCKD_CONFIG=" + c.config}}

	ctx, cancel := context.WithTimeout(context.Background(), patient(60*time.Second))
	defer cancel()
	cfg, err := client.LoadConfigFile(c.config)
	must(t, err)
	cl, err := client.New(ctx, cfg)
	must(t, err)
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: time.Minute})
	must(t, err)
	held := map[string]client.Holder{} // name -> its holder at the backup
	for g := range uint32(groups) {
		for k := range 3 {
			name := nameInGroup(fmt.Sprintf("held-g%d-%d", g, k), g, groups)
			_, err := sess.Acquire(ctx, name, client.LockOptions{Metadata: []byte(name)})
			must(t, err)
			st, err := cl.LockStatus(ctx, name)
			must(t, err)
			held[name] = st.Holders[0]
		}
	}

	file := filepath.Join(dir, "cluster.backup")
	out, errOut, code := lockctl.run(30*time.Second, "--json", "snapshot", "save", file)
	if code != 0 {
		t.Fatalf("lockctl snapshot save: exit %d\n%s%s", code, out, errOut)
	}
	var info client.SnapshotInfo
	must(t, json.Unmarshal([]byte(lastLine(out)), &info))
	if len(info.Groups) != groups || info.Bytes == 0 {
		t.Fatalf("snapshot save reported %+v", info)
	}
	t.Logf("backup: %s", lastLine(out))

	// A non-admin identity may not save a backup.
	c.lockdOK("certs-client-svc", "certs", "client", "svc", "--dir", c.certs)
	svc := &lockctlRunner{t: t, bin: lockctl.bin, env: []string{"LOCKD_CONFIG=" + c.config,
		"LOCKD_CERT=" + filepath.Join(c.certs, "client-svc.crt"), "LOCKD_KEY=" + filepath.Join(c.certs, "client-svc.key")}}
	if _, errOut, code := svc.run(30*time.Second, "snapshot", "save", filepath.Join(dir, "svc.backup")); code != lockctlExitForbidden || !strings.Contains(errOut, "admin") {
		t.Fatalf("snapshot save by a non-admin: exit %d, want %d naming admin:\n%s", code, lockctlExitForbidden, errOut)
	}

	// After the backup the old cluster goes on granting, in every group.
	var oldMax uint64
	for _, h := range held {
		oldMax = max(oldMax, h.Token)
	}
	for g := range uint32(groups) {
		for k := range 5 {
			l, err := sess.Acquire(ctx, nameInGroup(fmt.Sprintf("after-g%d-%d", g, k), g, groups), client.LockOptions{})
			must(t, err)
			oldMax = max(oldMax, l.Token())
			must(t, l.Release(ctx))
		}
	}
	cl.Close() // the session stays open on the cluster, as in a disaster
	c.stopAll()

	lockd := func(name string, args ...string) (string, int) {
		out, errOut, code := run(t, name, c.lockd, nil, 60*time.Second, args...)
		return out + errOut, code
	}
	dataDir := func(i int) string { return filepath.Join(c.dir, "data", strconv.Itoa(i)) }

	// Refusals, each leaving the target as it was.
	bad := filepath.Join(dir, "damaged.backup")
	b, err := os.ReadFile(file)
	must(t, err)
	b[len(b)/2] ^= 0x20
	must(t, os.WriteFile(bad, b, 0o600))
	fresh := filepath.Join(dir, "fresh")
	if out, code := lockd("restore-damaged", "restore", "--from", bad, "--data-dir", fresh, "--id", "1", "--groups", strconv.Itoa(groups)); code != lockdExitBadBackup || !strings.Contains(out, "use another copy") {
		t.Fatalf("restore of a damaged backup: exit %d, want %d:\n%s", code, lockdExitBadBackup, out)
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s behind: %v", fresh, err)
	}
	if out, code := lockd("restore-cut", "restore", "--from", bad, "--data-dir", fresh, "--id", "1", "--groups", strconv.Itoa(groups)); code != lockdExitBadBackup {
		t.Fatalf("restore of a damaged backup (again): exit %d:\n%s", code, out)
	}
	if out, code := lockd("restore-groups", "restore", "--from", file, "--data-dir", fresh, "--id", "1", "--groups", "8"); code != lockdExitSetup || !strings.Contains(out, "--groups 4") {
		t.Fatalf("restore with another group count: exit %d, want %d:\n%s", code, lockdExitSetup, out)
	}
	if out, code := lockd("restore-nonempty", "restore", "--from", file, "--data-dir", dataDir(1), "--id", "1", "--groups", strconv.Itoa(groups)); code != lockdExitSetup || !strings.Contains(out, "not empty") {
		t.Fatalf("restore into the old data dir: exit %d, want %d:\n%s", code, lockdExitSetup, out)
	}

	// The old cluster is gone; a new one is seeded from the backup.
	must(t, os.Rename(filepath.Join(c.dir, "data"), filepath.Join(c.dir, "data-lost")))
	for i := 1; i <= 3; i++ {
		out, code := lockd(fmt.Sprintf("restore-%d", i), "restore", "--from", file, "--data-dir", dataDir(i), "--id", strconv.Itoa(i), "--groups", strconv.Itoa(groups))
		if code != 0 {
			t.Fatalf("restore of node %d: exit %d\n%s", i, code, out)
		}
		t.Logf("node %d: %s", i, strings.SplitN(out, "\n", 2)[0])
	}
	for i := range c.nodes {
		c.startNode(i)
	}
	c.waitServing(20 * time.Second)

	cl, err = client.New(ctx, cfg)
	must(t, err)
	defer cl.Close()
	for name, h := range held {
		st, err := cl.LockStatus(ctx, name)
		must(t, err)
		if !st.Held || len(st.Holders) != 1 || st.Holders[0].Session != h.Session || st.Holders[0].Token != h.Token || string(st.Holders[0].Metadata) != name {
			t.Fatalf("restored %s: %+v, want held by session %d with token %d", name, st, h.Session, h.Token)
		}
	}
	s2, err := cl.NewSession(ctx, client.SessionOptions{TTL: time.Minute})
	must(t, err)
	for g := range uint32(groups) {
		name := nameInGroup(fmt.Sprintf("new-g%d", g), g, groups)
		l, err := s2.Acquire(ctx, name, client.LockOptions{})
		must(t, err)
		if l.Token() <= oldMax {
			t.Fatalf("new grant of %s in group %d has token %d, not above %d, the largest the old cluster granted (after the backup too)", name, g, l.Token(), oldMax)
		}
		t.Logf("group %d: first new token %d (old cluster's largest %d)", g, l.Token(), oldMax)
	}
	// A restored lock is still exclusive: the new session cannot take it.
	for name := range held {
		if _, err := s2.TryAcquire(ctx, name, client.LockOptions{}); err == nil || !strings.Contains(err.Error(), "held") {
			t.Fatalf("TryAcquire of restored held lock %s: %v, want it held", name, err)
		}
		break
	}
	c.stopAll()
}
