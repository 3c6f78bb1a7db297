package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// NodeTLSConfig builds the TLS configuration of a node from PEM material: the
// cluster CA certificate, and the node's certificate and key. The same
// configuration serves and dials:
//
//   - as a server it presents the node certificate and requires every
//     connecting party (peer or client) to present a certificate the cluster
//     CA signed (tls.RequireAndVerifyClientCert);
//   - as a client it trusts only the cluster CA and presents the node
//     certificate. The caller sets ServerName (NodeServerName of the peer it
//     means to reach) and NextProtos.
//
// It fails early, with a clear error, when the certificate was not signed by
// the CA, is not a node certificate, or does not match the key.
func NodeTLSConfig(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := poolFromPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("node TLS: CA certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node TLS: %w", err)
	}
	leaf, err := leafOf(&pair)
	if err != nil {
		return nil, fmt.Errorf("node TLS: %w", err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return nil, fmt.Errorf("node TLS: certificate %q does not verify against the cluster CA: %w", leaf.Subject.CommonName, err)
		}
	}
	if _, ok := NodeIDFromCert(leaf); !ok {
		return nil, fmt.Errorf("node TLS: certificate %q carries no node identity: issue it with IssueNode", leaf.Subject.CommonName)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13, // QUIC requires TLS 1.3 anyway
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientTLSConfig builds the TLS configuration of a client: it trusts only the
// cluster CA, and presents the client certificate when certPEM and keyPEM are
// given (both nil means no client certificate; lockd nodes then refuse the
// connection). The server name to verify is taken from the address dialed
// unless the caller sets ServerName.
func ClientTLSConfig(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := poolFromPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("client TLS: CA certificate: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certPEM == nil && keyPEM == nil {
		return cfg, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	leaf, err := leafOf(&pair)
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("client TLS: certificate %q does not verify against the cluster CA: %w", leaf.Subject.CommonName, err)
	}
	cfg.Certificates = []tls.Certificate{pair}
	return cfg, nil
}

// LoadNodeTLSConfig is NodeTLSConfig on files; errors name the file at fault.
func LoadNodeTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, certPEM, keyPEM, err := readMaterial(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg, err := NodeTLSConfig(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load %s, %s, %s: %w", caFile, certFile, keyFile, err)
	}
	return cfg, nil
}

// LoadClientTLSConfig is ClientTLSConfig on files; certFile and keyFile may
// both be empty for a client without certificate. Errors name the file at
// fault.
func LoadClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("load client TLS: certificate file %q and key file %q must be given together", certFile, keyFile)
	}
	caPEM, certPEM, keyPEM, err := readMaterial(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg, err := ClientTLSConfig(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load %s, %s, %s: %w", caFile, certFile, keyFile, err)
	}
	return cfg, nil
}

// readMaterial reads the three files; an empty name yields nil contents.
func readMaterial(files ...string) (caPEM, certPEM, keyPEM []byte, err error) {
	out := make([][]byte, len(files))
	for i, f := range files {
		if f == "" {
			continue
		}
		if out[i], err = readFile(f); err != nil {
			return nil, nil, nil, err
		}
	}
	return out[0], out[1], out[2], nil
}

// poolFromPEM parses every certificate in caPEM into a new pool.
func poolFromPEM(caPEM []byte) (*x509.CertPool, error) {
	if len(caPEM) == 0 {
		return nil, errors.New("empty")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return pool, nil
}

// leafOf returns the parsed leaf of pair, parsing it if tls did not already.
func leafOf(pair *tls.Certificate) (*x509.Certificate, error) {
	if pair.Leaf != nil {
		return pair.Leaf, nil
	}
	if len(pair.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	pair.Leaf = leaf
	return leaf, nil
}
