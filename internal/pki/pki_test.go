package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test cluster", time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block in certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNodeCertificateCarriesIdentityAndDefaultHosts(t *testing.T) {
	ca := newTestCA(t)
	certPEM, _, err := ca.IssueNode("3", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	if id, ok := NodeIDFromCert(c); !ok || id != "3" {
		t.Fatalf("NodeIDFromCert = %q, %v; want 3, true", id, ok)
	}
	if err := c.VerifyHostname("localhost"); err != nil {
		t.Errorf("default host localhost: %v", err)
	}
	if err := c.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("default host 127.0.0.1: %v", err)
	}
	if err := c.VerifyHostname(NodeServerName("3")); err != nil {
		t.Errorf("identity name: %v", err)
	}
	if err := c.VerifyHostname(NodeServerName("2")); err == nil {
		t.Error("node 3 certificate verifies as node 2")
	}
	if c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", c.PublicKeyAlgorithm)
	}
	if !c.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("leaf expires %v, want with the CA at %v", c.NotAfter, ca.Cert.NotAfter)
	}
}

func TestNodeCertificateUsesGivenHosts(t *testing.T) {
	ca := newTestCA(t)
	certPEM, _, err := ca.IssueNode("n1", []string{"10.0.0.7", "lock1.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	for _, h := range []string{"10.0.0.7", "lock1.example.com", NodeServerName("n1")} {
		if err := c.VerifyHostname(h); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if err := c.VerifyHostname("localhost"); err == nil {
		t.Error("explicit hosts still include localhost")
	}
}

func TestIssueRejectsBadNames(t *testing.T) {
	ca := newTestCA(t)
	for _, id := range []string{"", "-1", "1-", "Node1", "a.b", "a b", strings.Repeat("x", 41)} {
		if _, _, err := ca.IssueNode(id, nil); err == nil {
			t.Errorf("IssueNode(%q) succeeded", id)
		}
	}
	if _, _, err := ca.IssueNode("1", []string{"bad host/x"}); err == nil {
		t.Error("IssueNode accepted host with a slash")
	}
	for _, name := range []string{"", "a\nb", strings.Repeat("x", 65)} {
		if _, _, err := ca.IssueClient(name); err == nil {
			t.Errorf("IssueClient(%q) succeeded", name)
		}
	}
}

func TestLeafValidityIsCappedByCA(t *testing.T) {
	ca := newTestCA(t)
	ca.LeafValidity = 10 * time.Minute
	certPEM, _, err := ca.IssueClient("alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Until(parseCert(t, certPEM).NotAfter); got > 10*time.Minute || got < 9*time.Minute {
		t.Errorf("leaf valid for %v, want about 10m", got)
	}
	ca.LeafValidity = 100 * time.Hour
	certPEM, _, err = ca.IssueClient("bob")
	if err != nil {
		t.Fatal(err)
	}
	if na := parseCert(t, certPEM).NotAfter; na.After(ca.Cert.NotAfter) {
		t.Errorf("leaf expires %v, after the CA at %v", na, ca.Cert.NotAfter)
	}
}

// TestClientCertificateCarriesUnits: the units asked for are
// OrganizationalUnits of the certificate (roles for the access rules),
// beside lockd-client; the node unit is refused.
func TestClientCertificateCarriesUnits(t *testing.T) {
	ca := newTestCA(t)
	certPEM, _, err := ca.IssueClient("svc-p", "payments", "eu", "payments")
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	ous := c.Subject.OrganizationalUnit
	if len(ous) != 3 || !slices.Contains(ous, "lockd-client") || !slices.Contains(ous, "payments") || !slices.Contains(ous, "eu") {
		t.Errorf("units %q, want lockd-client, payments and eu once each", ous)
	}
	if _, ok := NodeIDFromCert(c); ok {
		t.Error("a client certificate with units carries a node identity")
	}
	for _, bad := range []string{"", nodeUnit, "a\nb", strings.Repeat("u", 65)} {
		if _, _, err := ca.IssueClient("svc-p", bad); err == nil {
			t.Errorf("unit %q was accepted", bad)
		}
	}
}

func TestClientCertificateCannotServeNorJoinMesh(t *testing.T) {
	ca := newTestCA(t)
	certPEM, _, err := ca.IssueClient("alice")
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	if _, ok := NodeIDFromCert(c); ok {
		t.Error("client certificate carries a node identity")
	}
	if c.Subject.CommonName != "alice" {
		t.Errorf("CommonName %q, want alice", c.Subject.CommonName)
	}
	_, err = c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err == nil {
		t.Error("client certificate verifies for server authentication")
	}
}

func TestSaveThenLoadCAKeepsKeyPrivate(t *testing.T) {
	ca := newTestCA(t)
	dir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("ca.key mode %v, want 0600", mode)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Equal(ca.Key) {
		t.Fatal("loaded CA differs from saved CA")
	}
	// A certificate issued by the loaded CA verifies against the original.
	certPEM, _, err := loaded.IssueNode("1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Errorf("certificate from loaded CA: %v", err)
	}
	if err := newTestCA(t).Save(dir); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second Save into the same directory: %v, want refusal", err)
	}
}

func TestLoadCAMissingFileNamesFileAndHowToCreateIt(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadCA(dir)
	if err == nil {
		t.Fatal("LoadCA on an empty directory succeeded")
	}
	want := "read " + filepath.Join(dir, CACertFile) + ": "
	if !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "run `lockd certs init` first") {
		t.Errorf("error %q, want it to start with %q and end with the init hint", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not match fs.ErrNotExist", err)
	}
	if strings.Count(err.Error(), dir) != 1 {
		t.Errorf("error %q names the path more than once", err)
	}
}

func TestLoadCAGarbageNamesFile(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	if err := os.WriteFile(keyPath, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadCA(dir)
	if err == nil || !strings.Contains(err.Error(), keyPath) {
		t.Errorf("LoadCA with a garbage key: %v, want the key path named", err)
	}
	// A key from another CA is caught too.
	other := newTestCA(t)
	otherDir := t.TempDir()
	if err := other.Save(otherDir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(otherDir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("LoadCA with a foreign key: %v", err)
	}
}

func TestWriteKeyPairThenLoadTLSConfigs(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	nodeCert, nodeKey, err := ca.IssueNode("1", nil)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err := ca.IssueClient("ops")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPair(dir, "node1", nodeCert, nodeKey); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPair(dir, "ops", clientCert, clientKey); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "node1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("node1.key mode %v, want 0600", mode)
	}
	caFile := filepath.Join(dir, CACertFile)
	if _, err := LoadNodeTLSConfig(caFile, filepath.Join(dir, "node1.crt"), filepath.Join(dir, "node1.key")); err != nil {
		t.Errorf("LoadNodeTLSConfig: %v", err)
	}
	if _, err := LoadClientTLSConfig(caFile, filepath.Join(dir, "ops.crt"), filepath.Join(dir, "ops.key")); err != nil {
		t.Errorf("LoadClientTLSConfig: %v", err)
	}
	if cfg, err := LoadClientTLSConfig(caFile, "", ""); err != nil || len(cfg.Certificates) != 0 {
		t.Errorf("LoadClientTLSConfig without certificate: %v", err)
	}
	// A client certificate is not a node certificate.
	_, err = LoadNodeTLSConfig(caFile, filepath.Join(dir, "ops.crt"), filepath.Join(dir, "ops.key"))
	if err == nil {
		t.Error("LoadNodeTLSConfig accepted a client certificate")
	}
	missing := filepath.Join(dir, "node9.crt")
	_, err = LoadNodeTLSConfig(caFile, missing, filepath.Join(dir, "node1.key"))
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing node certificate: %v, want %s named", err, missing)
	}
}

func TestNodeTLSConfigRejectsCertificateFromAnotherCA(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	certPEM, keyPEM, err := other.IssueNode("1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM); err == nil {
		t.Error("NodeTLSConfig accepted a certificate from another CA")
	}
	certPEM, keyPEM, err = other.IssueClient("eve")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ClientTLSConfig(ca.CertPEM(), certPEM, keyPEM); err == nil {
		t.Error("ClientTLSConfig accepted a certificate from another CA")
	}
}

// handshake runs a TLS handshake over an in-memory pipe and returns the
// client's and the server's error.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(c2, server)
		err := s.Handshake()
		if err == nil {
			// TLS 1.3 finishes the client side first; read to learn
			// whether the server accepted the client certificate.
			_, err = s.Write([]byte{1})
		}
		done <- err
		c2.Close()
	}()
	c := tls.Client(c1, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		var b [1]byte
		_, clientErr = c.Read(b[:])
	}
	c1.Close()
	return clientErr, <-done
}

func TestNodeAndClientConfigsAuthenticateBothWays(t *testing.T) {
	ca := newTestCA(t)
	n1Cert, n1Key, _ := ca.IssueNode("1", nil)
	n2Cert, n2Key, _ := ca.IssueNode("2", nil)
	clCert, clKey, _ := ca.IssueClient("alice")
	n1, err := NodeTLSConfig(ca.CertPEM(), n1Cert, n1Key)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := NodeTLSConfig(ca.CertPEM(), n2Cert, n2Key)
	if err != nil {
		t.Fatal(err)
	}

	dial := n2.Clone()
	dial.ServerName = NodeServerName("1")
	if cerr, serr := handshake(t, n1, dial); cerr != nil || serr != nil {
		t.Errorf("node 2 dials node 1: client %v, server %v", cerr, serr)
	}
	dial.ServerName = NodeServerName("3")
	if cerr, _ := handshake(t, n1, dial); cerr == nil {
		t.Error("node 1 answered as node 3")
	}

	cl, err := ClientTLSConfig(ca.CertPEM(), clCert, clKey)
	if err != nil {
		t.Fatal(err)
	}
	cl.ServerName = "127.0.0.1"
	if cerr, serr := handshake(t, n1, cl); cerr != nil || serr != nil {
		t.Errorf("client dials node: client %v, server %v", cerr, serr)
	}
	anon, err := ClientTLSConfig(ca.CertPEM(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	anon.ServerName = "127.0.0.1"
	if _, serr := handshake(t, n1, anon); serr == nil {
		t.Error("node accepted a client without certificate")
	}
}
