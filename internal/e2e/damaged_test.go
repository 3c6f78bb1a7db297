//go:build unix

package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos/pebblestore"
)

// lockdExitDamaged is lockd's exit code for a data dir that lost or
// damaged durable state (cmd/lockd/main.go).
const lockdExitDamaged = 5

// TestDamagedDataDirIsRefused runs a real 3-node cluster, writes locks,
// then damages node 3's data dir while it is stopped, in each way an
// operator met: wiped, 64 bytes flipped in the middle of the newest WAL,
// the newest WAL cut to half, every WAL cut to zero, the MANIFEST flipped
// or cut, an sstable flipped. Each time node 3 must exit with code 5 and
// say what it found, before it ever serves; its intact data dir is then put
// back and it serves again.
func TestDamagedDataDirIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	c := startCluster(t, 4, time.Second)
	c.waitServing(20 * time.Second)
	dir := filepath.Join(c.dir, "data", "3")
	n := 0
	writeLocks := func(k int) {
		t.Helper()
		for range k {
			n++
			clientAcquireRelease(t, c.config, fmt.Sprintf("damage-%d", n))
		}
	}
	stop3 := func() {
		t.Helper()
		c.nodes[2].signal(syscall.SIGTERM)
		if code := c.nodes[2].mustExit(10 * time.Second); code != 0 {
			t.Fatalf("node 3 stopped with exit %d:\n%s", code, tail(c.nodes[2].err.String(), 20))
		}
		c.holdPort(2)
	}
	writeLocks(10)

	cases := []struct {
		name  string
		flush bool // flush pebble's memtable to sstables first
		harm  func(t *testing.T)
		says  string
	}{
		{"wiped", false, func(t *testing.T) { must(t, os.RemoveAll(dir)) }, "knows node 3 as incarnation"},
		{"wal-flipped", false, func(t *testing.T) { flip(t, largest(t, dir, ".log"), 64) }, "lost synced records"},
		{"wal-halved", false, func(t *testing.T) { cut(t, largest(t, dir, ".log")) }, "lost synced records"},
		{"wal-zeroed", false, func(t *testing.T) {
			for _, f := range files(t, dir, ".log") {
				must(t, os.Truncate(f, 0))
			}
		}, "lost synced records"},
		{"manifest-flipped", true, func(t *testing.T) { flip(t, newestPrefix(t, dir, "MANIFEST-"), 64) }, "damaged"},
		{"manifest-cut", true, func(t *testing.T) { cut(t, newestPrefix(t, dir, "MANIFEST-")) }, "damaged"},
		{"sstable-flipped", true, func(t *testing.T) { flip(t, newest(t, dir, ".sst"), 64) }, "damaged"},
	}
	backup := filepath.Join(c.dir, "backup-3")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeLocks(3)
			// The damage must hit records node 3 synced: on a busy machine
			// a node that just came back may not have written its new WAL
			// yet (it was 44 bytes once), so write until it has.
			for i := 0; strings.HasPrefix(tc.name, "wal-") && i < 30 && fileSize(t, largest(t, dir, ".log")) < 1024; i++ {
				writeLocks(1)
			}
			stop3()
			if tc.flush {
				st, err := pebblestore.Open(dir, pebblestore.Options{})
				must(t, err)
				must(t, st.Flush())
				must(t, st.Close())
			}
			must(t, os.RemoveAll(backup))
			copyDir(t, dir, backup)
			tc.harm(t)
			c.startNode(2)
			p := c.nodes[2]
			code := p.mustExit(30 * time.Second)
			out := p.err.String()
			if code != lockdExitDamaged || !strings.Contains(out, tc.says) || !strings.Contains(out, "--recover-from-peers") {
				t.Fatalf("damaged node 3 exited %d, want %d with %q and the way back:\n%s", code, lockdExitDamaged, tc.says, tail(out, 20))
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "became master") {
				t.Fatalf("damaged node 3 panicked or led:\n%s", tail(out, 30))
			}
			t.Logf("node 3: %s", lastLine(out))
			must(t, os.RemoveAll(dir))
			must(t, os.Rename(backup, dir))
			c.startNode(2)
			c.waitServing(20 * time.Second)
		})
	}

	c.stopAll()
}

// TestRecoverFromPeers: node 3 of a real cluster loses its data dir and
// comes back with --recover-from-peers: it catches up from nodes 1 and 2
// before it votes, then counts in a quorum (with node 1 stopped, nodes 2
// and 3 serve every group). The flag on a data dir with state is refused.
func TestRecoverFromPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes; skipped with -short")
	}
	c := startCluster(t, 4, time.Second)
	c.waitServing(20 * time.Second)
	dir := filepath.Join(c.dir, "data", "3")
	for i := range 20 {
		clientAcquireRelease(t, c.config, fmt.Sprintf("recover-%d", i))
	}
	start3 := func(name string, args ...string) *proc {
		return startProc(t, name, c.lockd, []string{
			"LOCKD_ID=3", "LOCKD_PEERS=" + c.peers(), "LOCKD_DATA_DIR=" + dir, "LOCKD_CERTS=" + c.certs,
			"LOCKD_GROUPS=4", "LOCKD_ADMIN=" + c.admins[2], "LOCKD_LOG_LEVEL=debug",
		}, append([]string{"run", "--lease", c.lease.String(), "--log-format", "json"}, args...)...)
	}
	c.nodes[2].signal(syscall.SIGTERM)
	if code := c.nodes[2].mustExit(10 * time.Second); code != 0 {
		t.Fatalf("node 3 stopped with exit %d", code)
	}
	if p := start3("lockd-3.not-empty", "--recover-from-peers"); p.mustExit(30*time.Second) != lockdExitSetup {
		t.Fatalf("--recover-from-peers on a data dir with state: exit %d, want %d:\n%s", p.code, lockdExitSetup, tail(p.err.String(), 10))
	}
	must(t, os.RemoveAll(dir))
	c.nodes[2] = start3("lockd-3.recover", "--recover-from-peers")
	if _, ok := c.nodes[2].err.wait(mustRe("recovered from peers"), patient(60*time.Second)); !ok {
		t.Fatalf("node 3 did not recover:\n%s", tail(c.nodes[2].err.String(), 20))
	}
	c.nodes[0].signal(syscall.SIGTERM)
	c.nodes[0].mustExit(10 * time.Second)
	c.waitServing(30 * time.Second)
	for i := range 3 {
		clientAcquireRelease(t, c.config, fmt.Sprintf("recovered-%d", i))
	}
	c.startNode(0)
	c.waitServing(20 * time.Second)
	c.stopAll()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// files returns dir's files whose names end in suffix, sorted by name
// (pebble numbers its files, so the last is the newest).
func files(t *testing.T, dir, suffix string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out
}

// largest is the biggest *suffix file in dir.
func largest(t *testing.T, dir, suffix string) string {
	t.Helper()
	best, size := "", int64(-1)
	for _, f := range files(t, dir, suffix) {
		if n := fileSize(t, f); n > size {
			best, size = f, n
		}
	}
	if best == "" {
		t.Fatalf("no *%s file in %s", suffix, dir)
	}
	return best
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	must(t, err)
	return fi.Size()
}

func newest(t *testing.T, dir, suffix string) string {
	t.Helper()
	fs := files(t, dir, suffix)
	if len(fs) == 0 {
		t.Fatalf("no *%s file in %s", suffix, dir)
	}
	return fs[len(fs)-1]
}

func newestPrefix(t *testing.T, dir, prefix string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	last := ""
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			last = filepath.Join(dir, e.Name())
		}
	}
	if last == "" {
		t.Fatalf("no %s* file in %s", prefix, dir)
	}
	return last
}

// flip inverts n bytes in the middle of file.
func flip(t *testing.T, file string, n int) {
	t.Helper()
	b, err := os.ReadFile(file)
	must(t, err)
	if len(b) < n {
		t.Fatalf("%s has only %d bytes", file, len(b))
	}
	mid := len(b)/2 - n/2
	for i := mid; i < mid+n; i++ {
		b[i] ^= 0xff
	}
	must(t, os.WriteFile(file, b, 0o644))
	t.Logf("flipped %d bytes at %d of %s (%d bytes)", n, mid, filepath.Base(file), len(b))
}

// cut truncates file to half its size.
func cut(t *testing.T, file string) {
	t.Helper()
	st, err := os.Stat(file)
	must(t, err)
	must(t, os.Truncate(file, st.Size()/2))
	t.Logf("cut %s from %d to %d bytes", filepath.Base(file), st.Size(), st.Size()/2)
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	must(t, os.MkdirAll(to, 0o700))
	ents, err := os.ReadDir(from)
	must(t, err)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		src, err := os.Open(filepath.Join(from, e.Name()))
		must(t, err)
		dst, err := os.Create(filepath.Join(to, e.Name()))
		must(t, err)
		_, err = io.Copy(dst, src)
		src.Close()
		must(t, err)
		must(t, dst.Close())
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
