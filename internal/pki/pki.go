// Package pki makes and loads the certificates a lockd cluster runs on, with
// the standard library only, so that first use needs no openssl.
//
// One cluster CA signs everything. Node certificates carry the node's
// identity as a DNS name, NodeServerName(id) ("node-3.lockd.invalid"), next to
// the host names and addresses the node is reached at. Because that name is
// in the certificate, a node dialing peer 3 can ask TLS to verify exactly
// "node-3.lockd.invalid" and the usual hostname check pins the peer's
// identity: a node holding the certificate of node 4 cannot answer for node
// 3. The ".invalid" top-level domain is reserved (RFC 2606), so that name
// never collides with a real DNS name. Client certificates carry the client's
// name as CommonName and may only be used for client authentication.
//
// All keys are ECDSA P-256, stored as PKCS #8 PEM in files readable by the
// owner only (0600).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// clockSkew is how far NotBefore is moved into the past, so that a
// certificate made on one machine is valid at once on a peer whose clock is
// slightly behind.
const clockSkew = 5 * time.Minute

// nodeNameSuffix ends every node identity name; see NodeServerName.
const nodeNameSuffix = ".lockd.invalid"

// nodeNamePrefix starts every node identity name; see NodeServerName.
const nodeNamePrefix = "node-"

// Organizational units tell node and client certificates apart for people
// reading them (openssl x509 -text); authorization relies on extended key
// usage and on the node identity name, not on these.
const (
	nodeUnit   = "lockd-node"
	clientUnit = "lockd-client"
)

// defaultHosts returns the names put in a node certificate when IssueNode
// gets no hosts: enough for a cluster on one machine (lockd dev, tests). It is
// a function, not a package variable, so that no caller can change it.
func defaultHosts() []string { return []string{"127.0.0.1", "localhost"} }

// CA is a cluster certificate authority: the certificate every node and
// client trusts, and the private key that signs node and client certificates.
//
// Invariant: Key is the private key of Cert, and Cert is a CA certificate.
// NewCA and LoadCA establish it; nothing else mutates a CA.
type CA struct {
	// Cert is the self-signed CA certificate.
	Cert *x509.Certificate
	// Key signs issued certificates. Keep it off the nodes where possible.
	Key *ecdsa.PrivateKey
	// LeafValidity bounds the lifetime of issued certificates. Zero means
	// they expire with the CA. An issued certificate never outlives the CA.
	LeafValidity time.Duration

	certPEM []byte
}

// NewCA makes a fresh, self-signed cluster CA valid for validity from now.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if strings.TrimSpace(commonName) == "" {
		return nil, errors.New("new CA: common name is empty")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("new CA %q: validity %v must be positive", commonName, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: generate key: %w", commonName, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"lockd"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// The CA signs leaves directly; it never delegates to another CA.
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: create certificate: %w", commonName, err)
	}
	return newCA(der, key)
}

// newCA checks that der and key form a CA and wraps them.
func newCA(der []byte, key *ecdsa.PrivateKey) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("CA key does not belong to CA certificate %q", cert.Subject.CommonName)
	}
	return &CA{
		Cert:    cert,
		Key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// CertPEM returns the CA certificate in PEM form, as nodes and clients need it
// to verify each other. The caller must not modify the returned slice.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// NodeServerName is the DNS name that identifies node nodeID in its
// certificate. Peers verify it as the TLS server name, so the ordinary
// hostname check proves which node answered.
func NodeServerName(nodeID string) string {
	return nodeNamePrefix + nodeID + nodeNameSuffix
}

// NodeIDFromCert returns the node ID a node certificate was issued for, and
// false when the certificate carries no node identity (a client certificate)
// or more than one (which IssueNode never makes). It does not verify the
// certificate: call it on a chain TLS has already verified.
func NodeIDFromCert(cert *x509.Certificate) (string, bool) {
	id, found := "", false
	for _, name := range cert.DNSNames {
		rest, ok := strings.CutPrefix(name, nodeNamePrefix)
		if !ok {
			continue
		}
		rest, ok = strings.CutSuffix(rest, nodeNameSuffix)
		if !ok || checkNodeID(rest) != nil {
			continue
		}
		if found {
			return "", false
		}
		id, found = rest, true
	}
	return id, found
}

// checkNodeID accepts what can be one DNS label, so that NodeServerName(id)
// is a valid host name: 1 to 40 lower-case letters, digits and inner hyphens.
func checkNodeID(id string) error {
	if id == "" || len(id) > 40 {
		return fmt.Errorf("node ID %q must have 1 to 40 characters", id)
	}
	for i, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(id)-1:
		default:
			return fmt.Errorf("node ID %q may only hold lower-case letters, digits and inner hyphens", id)
		}
	}
	return nil
}

// IssueNode issues the certificate of node nodeID, valid for serving and for
// dialing peers (server and client authentication). hosts lists the IP
// addresses and DNS names the node is reached at; when empty it defaults to
// 127.0.0.1 and localhost. The identity name NodeServerName(nodeID) is always
// added. It returns PEM-encoded certificate and PKCS #8 key.
func (ca *CA) IssueNode(nodeID string, hosts []string) (certPEM, keyPEM []byte, err error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, nil, fmt.Errorf("issue node certificate: %w", err)
	}
	if len(hosts) == 0 {
		hosts = defaultHosts()
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: nodeNamePrefix + nodeID, OrganizationalUnit: []string{nodeUnit}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{NodeServerName(nodeID)},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if h == "" || strings.ContainsAny(h, " /:@") || strings.HasSuffix(h, nodeNameSuffix) {
			return nil, nil, fmt.Errorf("issue certificate for node %s: host %q is neither an IP address nor a DNS name", nodeID, h)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	certPEM, keyPEM, err = ca.issue(tmpl)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for node %s: %w", nodeID, err)
	}
	return certPEM, keyPEM, nil
}

// IssueClient issues a client certificate whose CommonName is name, with
// the OrganizationalUnits units besides lockd's own "lockd-client", so that
// an access rule can name the units as roles. It is valid for client
// authentication only: it can neither serve nor join the peer mesh. It
// returns PEM-encoded certificate and PKCS #8 key.
func (ca *CA) IssueClient(name string, units ...string) (certPEM, keyPEM []byte, err error) {
	if name == "" || len(name) > 64 {
		return nil, nil, fmt.Errorf("issue client certificate: name %q must have 1 to 64 characters", name)
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return nil, nil, fmt.Errorf("issue client certificate: name %q holds a control character", name)
		}
	}
	ous := []string{clientUnit}
	for _, u := range units {
		if err := CheckUnit(u); err != nil {
			return nil, nil, fmt.Errorf("issue certificate for client %q: %w", name, err)
		}
		if !slices.Contains(ous, u) {
			ous = append(ous, u)
		}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: ous},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, keyPEM, err = ca.issue(tmpl)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for client %q: %w", name, err)
	}
	return certPEM, keyPEM, nil
}

// CheckUnit checks an OrganizationalUnit asked for in a client
// certificate: 1 to 64 printable characters, and not the unit that marks
// node certificates (a client must not look like a node to a rule).
func CheckUnit(u string) error {
	if u == "" || len(u) > 64 {
		return fmt.Errorf("unit %q must have 1 to 64 characters", u)
	}
	for _, c := range u {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("unit %q holds a control character", u)
		}
	}
	if u == nodeUnit {
		return fmt.Errorf("unit %q marks node certificates; pick another name for the role", u)
	}
	return nil
}

// issue fills in the parts every leaf shares, signs tmpl and encodes the result.
func (ca *CA) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl.SerialNumber, err = randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = ca.Cert.NotAfter
	if ca.LeafValidity > 0 && now.Add(ca.LeafValidity).Before(tmpl.NotAfter) {
		tmpl.NotAfter = now.Add(ca.LeafValidity)
	}
	if !tmpl.NotAfter.After(now) {
		return nil, nil, fmt.Errorf("CA %q expired at %s", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.RFC3339))
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// randomSerial returns a random positive 128-bit serial number, as RFC 5280
// asks for serials that are unique per CA and unpredictable.
func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}
