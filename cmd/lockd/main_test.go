package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
)

// lockd runs the command in-process and returns its exit code and output.
func lockd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"lockd"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, got)
		}
	}
}

// makeCerts makes a CA and certificates for nodes 1 to 3 in a temp dir.
func makeCerts(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if code, out, errOut := lockd(t, "certs", "init", "--dir", dir); code != 0 {
		t.Fatalf("certs init: exit %d\n%s%s", code, out, errOut)
	}
	for _, id := range []string{"1", "2", "3"} {
		if code, out, errOut := lockd(t, "certs", "node", id, "--dir", dir); code != 0 {
			t.Fatalf("certs node %s: exit %d\n%s%s", id, code, out, errOut)
		}
	}
	return dir
}

func TestRunWithoutCertificatesSaysHowToMakeThem(t *testing.T) {
	data := t.TempDir()
	peers := "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
	code, _, errOut := lockd(t, "run", "--id", "2", "--peers", peers, "--data-dir", data)
	if code != exitSetup {
		t.Fatalf("exit %d, want %d (set-up refused)\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error without --certs", errOut, "lockd certs init --dir certs", "lockd certs node 2 --dir certs")

	empty := t.TempDir()
	code, _, errOut = lockd(t, "run", "--id", "2", "--peers", peers, "--data-dir", data, "--certs", empty)
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error with an empty --certs", errOut, "lockd certs init --dir "+empty, "lockd certs node 2 --dir "+empty)

	// A CA but no certificate for this node: only the node step is missing.
	certs := makeCerts(t)
	code, _, errOut = lockd(t, "run", "--id", "4", "--peers", peers+",4=127.0.0.1:7004", "--data-dir", data, "--certs", certs)
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error without node-4.crt", errOut, "node-4.crt", "lockd certs node 4 --dir "+certs)
}

func TestRunRefusesACertificateOfAnotherNode(t *testing.T) {
	certs := makeCerts(t)
	// node-2's files under node-1's name.
	for _, ext := range []string{".crt", ".key"} {
		b, err := os.ReadFile(filepath.Join(certs, "node-2"+ext))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certs, "node-1"+ext), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, _, errOut := lockd(t, "run", "--id", "1", "--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002", "--data-dir", t.TempDir(), "--certs", certs)
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error", errOut, "issued for node 2, not node 1", "lockd certs node 1")
}

// DESIGN.md "Fixed group count": a node started with another count refuses
// to start, with a clear error.
func TestRunRefusesADataDirOfAnotherGroupCount(t *testing.T) {
	certs := makeCerts(t)
	data := t.TempDir()
	st, err := pebblestore.Open(data, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveMeta(pebblestore.Meta{ClusterID: "lockd", Groups: 4, NodeID: 1}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, _, errOut := lockd(t, "run", "--id", "1", "--peers", "1=127.0.0.1:7999", "--data-dir", data, "--certs", certs, "--groups", "8")
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error", errOut, "created with 4 groups", "--groups 8")
}

// A data dir another process holds (another lockd on the same dir) is a
// set-up refusal that says so, not a failure (issue 9, part 4).
func TestRunRefusesALockedDataDir(t *testing.T) {
	certs := makeCerts(t)
	data := t.TempDir()
	st, err := pebblestore.Open(data, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	code, _, errOut := lockd(t, "run", "--id", "1", "--peers", fmt.Sprintf("1=127.0.0.1:%d", port), "--data-dir", data, "--certs", certs)
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error", errOut, "locked by another process")
}

func TestRunReportsABusyPort(t *testing.T) {
	certs := makeCerts(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := pc.LocalAddr().String()
	code, _, errOut := lockd(t, "run", "--id", "1", "--peers", "1="+addr, "--data-dir", t.TempDir(), "--certs", certs)
	if code != exitAddrBusy {
		t.Fatalf("exit %d, want %d (address in use)\n%s", code, exitAddrBusy, errOut)
	}
	mustContain(t, "the error", errOut, addr, "in use", "--listen")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, errOut = lockd(t, "run", "--id", "1", "--peers", "1=127.0.0.1:7999", "--data-dir", t.TempDir(), "--certs", certs, "--admin", ln.Addr().String())
	if code != exitAddrBusy {
		t.Fatalf("exit %d, want %d (admin address in use)\n%s", code, exitAddrBusy, errOut)
	}
	mustContain(t, "the error", errOut, ln.Addr().String(), "--admin")
}

func TestDevReportsABusyPortAndHowToPickAnother(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	base := port - 1
	code, _, errOut := lockd(t, "dev", "--base-port", strconv.Itoa(base), "--admin-base-port", "-1")
	if code != exitAddrBusy {
		t.Fatalf("exit %d, want %d\n%s", code, exitAddrBusy, errOut)
	}
	mustContain(t, "the error", errOut, "is in use", "--base-port")
}

func TestCertsInitRefusesToReplaceACA(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := lockd(t, "certs", "init", "--dir", dir); code != 0 {
		t.Fatalf("first init: exit %d\n%s", code, errOut)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	code, _, errOut := lockd(t, "certs", "init", "--dir", dir)
	if code != exitSetup {
		t.Fatalf("second init: exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the refusal", errOut, "already exists", "--force")
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); !bytes.Equal(before, after) {
		t.Fatal("a refused init changed ca.crt")
	}
	if code, _, errOut := lockd(t, "certs", "init", "--dir", dir, "--force"); code != 0 {
		t.Fatalf("init --force: exit %d\n%s", code, errOut)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); bytes.Equal(before, after) {
		t.Fatal("init --force kept the old CA")
	}
}

func TestCertsIssueNodeAndClientCertificates(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := lockd(t, "certs", "node", "1", "--dir", dir); code != exitSetup || !strings.Contains(errOut, "lockd certs init --dir "+dir) {
		t.Fatalf("certs node without a CA: exit %d, want %d and a hint\n%s", code, exitSetup, errOut)
	}
	lockd(t, "certs", "init", "--dir", dir)
	// Flags after the node id, as people write them.
	if code, _, errOut := lockd(t, "certs", "node", "3", "--dir", dir, "--host", "10.1.2.3", "--host", "db3.example.com"); code != 0 {
		t.Fatalf("certs node: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := lockd(t, "certs", "client", "alice", "--dir", dir); code != 0 {
		t.Fatalf("certs client: exit %d\n%s", code, errOut)
	}
	tlsConf, err := pki.LoadNodeTLSConfig(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "node-3.crt"), filepath.Join(dir, "node-3.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := tlsConf.Certificates[0].Leaf
	if id, _ := pki.NodeIDFromCert(leaf); id != "3" {
		t.Errorf("node-3.crt carries node id %q", id)
	}
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "10.1.2.3" || !contains(leaf.DNSNames, "db3.example.com") {
		t.Errorf("node-3.crt hosts: %v %v", leaf.IPAddresses, leaf.DNSNames)
	}
	if _, err := pki.LoadClientTLSConfig(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client-alice.crt"), filepath.Join(dir, "client-alice.key")); err != nil {
		t.Fatal(err)
	}
	// --ou puts roles in the certificate for the access rules to name.
	if code, out, errOut := lockd(t, "certs", "client", "bob", "--ou", "payments", "--ou", "eu", "--dir", dir); code != 0 || !strings.Contains(out, "units payments, eu") {
		t.Fatalf("certs client --ou: exit %d\n%s%s", code, out, errOut)
	}
	bob, err := pki.LoadClientTLSConfig(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client-bob.crt"), filepath.Join(dir, "client-bob.key"))
	if err != nil {
		t.Fatal(err)
	}
	if ou := bob.Certificates[0].Leaf.Subject.OrganizationalUnit; !contains(ou, "payments") || !contains(ou, "eu") {
		t.Errorf("client-bob.crt units %v, want payments and eu", ou)
	}
	if code, _, errOut := lockd(t, "certs", "client", "eve", "--ou", "lockd-node", "--dir", dir); code != exitUsage || !strings.Contains(errOut, "marks node certificates") {
		t.Errorf("certs client --ou lockd-node: exit %d, want %d\n%s", code, exitUsage, errOut)
	}
	for _, f := range []string{"ca.key", "node-3.key", "client-alice.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	for _, bad := range [][]string{{"certs", "node", "0", "--dir", dir}, {"certs", "node", "x", "--dir", dir}, {"certs", "client", "../evil", "--dir", dir}, {"certs", "node", "--dir", dir}} {
		if code, _, _ := lockd(t, bad...); code != exitUsage {
			t.Errorf("lockd %v: exit %d, want %d", bad, code, exitUsage)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestUsageErrorsExitWithCode64(t *testing.T) {
	certs := makeCerts(t)
	for _, args := range [][]string{
		{"bogus"},
		{"run", "--bogus"},
		{"run", "--peers", "1=127.0.0.1:7001", "--data-dir", "x", "--certs", certs},                   // no --id
		{"run", "--id", "1", "--data-dir", "x", "--certs", certs},                                     // no --peers
		{"run", "--id", "1", "--peers", "1=127.0.0.1:7001", "--certs", certs},                         // no --data-dir
		{"run", "--id", "2", "--peers", "1=127.0.0.1:7001", "--data-dir", "x", "--certs", certs},      // id not in peers
		{"run", "--id", "1", "--peers", "1=127.0.0.1", "--data-dir", "x", "--certs", certs},           // no port
		{"run", "--id", "1", "--peers", "1=127.0.0.1:7001", "--data-dir", "x", "--log-level", "loud"}, // bad level
		{"run", "--id", "1", "--peers", "1=127.0.0.1:7001", "--data-dir", "x", "--log-format", "xml"}, // bad format
		{"run", "--id", "1", "--peers", "1=127.0.0.1:7001", "--data-dir", "x", "--groups", "0"},       // bad groups
		{"dev", "--nodes", "0"},
	} {
		code, _, errOut := lockd(t, args...)
		if code != exitUsage {
			t.Errorf("lockd %s: exit %d, want %d\n%s", strings.Join(args, " "), code, exitUsage, errOut)
		}
	}
}

func TestEnvironmentFallbacks(t *testing.T) {
	t.Setenv("LOCKD_ID", "1")
	t.Setenv("LOCKD_PEERS", "1=127.0.0.1:7001")
	t.Setenv("LOCKD_DATA_DIR", t.TempDir())
	// Everything but the certificates comes from the environment, so the
	// refusal must be about certificates, not about a missing flag.
	code, _, errOut := lockd(t, "run")
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error", errOut, "lockd certs node 1")
}

func TestHelpDocumentsExitCodesAndUDPBuffers(t *testing.T) {
	code, out, _ := lockd(t, "run", "--help")
	if code != 0 {
		t.Fatalf("run --help: exit %d", code)
	}
	mustContain(t, "lockd run --help", out, "EXIT CODES", "removed from the cluster", "--join", "net.core.rmem_max", "net.core.wmem_max", "LOCKD_PEERS", "LOCKD_CERTS", "lockd certs init")
	_, out, _ = lockd(t, "--help")
	mustContain(t, "lockd --help", out, "EXIT CODES", "dev", "run", "certs")
	_, out, _ = lockd(t, "certs", "node", "--help")
	mustContain(t, "lockd certs node --help", out, "node-N.crt", "ca.crt")
	code, out, _ = lockd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "lockd ") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

func TestParsePeers(t *testing.T) {
	got, err := parsePeers(" 1=127.0.0.1:7001, 2=127.0.0.1:7002,3=[::1]:7003 ")
	if err != nil {
		t.Fatal(err)
	}
	want := map[paxos.NodeID]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "[::1]:7003"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if s := formatPeers(got); s != "1=127.0.0.1:7001,2=127.0.0.1:7002,3=[::1]:7003" {
		t.Fatalf("formatPeers: %q", s)
	}
	for _, bad := range []string{"", "1", "x=127.0.0.1:1", "0=127.0.0.1:1", "1=127.0.0.1", "1=127.0.0.1:0",
		"1=127.0.0.1:1,1=127.0.0.1:2", "1=127.0.0.1:1,2=127.0.0.1:1", "1=:7001"} {
		if _, err := parsePeers(bad); err == nil {
			t.Errorf("parsePeers(%q) accepted", bad)
		}
	}
}

func TestInterspersedFlags(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"lockd certs node 1 --dir d --host h", "lockd certs node --dir d --host h 1"},
		{"lockd certs client alice --dir=d", "lockd certs client --dir=d alice"},
		{"lockd certs node --dir d 1", "lockd certs node --dir d 1"},
		{"lockd run --id 1", "lockd run --id 1"},
	} {
		got := strings.Join(interspersed(strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("interspersed(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Issue 11: a node whose data dir records its removal from the cluster
// exits with 8 at once and says how to bring the machine back; the systemd
// unit does not restart on 8.
func TestRunRefusesARemovedNode(t *testing.T) {
	certs := makeCerts(t)
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "lockd-members.json"), []byte(`{"version": 1, "initial": [1, 2, 3], "member": true, "removed": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := lockd(t, "run", "--id", "1", "--peers", "1=127.0.0.1:7999", "--data-dir", data, "--certs", certs)
	if code != exitRemoved {
		t.Fatalf("exit %d, want %d\n%s", code, exitRemoved, errOut)
	}
	mustContain(t, "the error", errOut, "removed from the cluster", "--join", "lockctl members add")
}

// Issue 11: --join is for a brand-new node: on a data dir that holds state
// it is a set-up refusal (3) that says what to do.
func TestRunJoinNeedsAnEmptyDataDir(t *testing.T) {
	certs := makeCerts(t)
	if code, out, errOut := lockd(t, "certs", "node", "4", "--dir", certs); code != 0 {
		t.Fatalf("certs node 4: exit %d\n%s%s", code, out, errOut)
	}
	data := t.TempDir()
	st, err := pebblestore.Open(data, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveMeta(pebblestore.Meta{ClusterID: "lockd", Groups: 16, NodeID: 4}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, _, errOut := lockd(t, "run", "--id", "4", "--join", "--peers", "1=127.0.0.1:7999,4=127.0.0.1:7998", "--data-dir", data, "--certs", certs)
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s", code, exitSetup, errOut)
	}
	mustContain(t, "the error", errOut, "--join", "empty data dir")
}
