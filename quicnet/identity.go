package quicnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/lockd/lockd/internal/pki"
	"github.com/quic-go/quic-go"
)

// peerServerName is the TLS server name that only node id's certificate
// satisfies.
func peerServerName(id NodeID) string { return pki.NodeServerName(id.String()) }

// peerNodeID returns the node ID in the certificate a peer presented. TLS
// has already verified the chain against the cluster CA.
func peerNodeID(qc *quic.Conn) (NodeID, error) {
	certs := qc.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return 0, errors.New("peer presented no certificate")
	}
	s, ok := pki.NodeIDFromCert(certs[0])
	if !ok {
		return 0, fmt.Errorf("certificate %q is not a node certificate", certs[0].Subject.CommonName)
	}
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("certificate names node %q, which is not a valid numeric node ID", s)
	}
	return NodeID(id), nil
}

// leafCert returns the parsed leaf certificate of c.
func leafCert(c *tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, errors.New("certificate is empty")
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return leaf, nil
}

// resolveUDP turns "host:port" into a UDP address, looking the host up
// within ctx when it is not an IP literal.
func resolveUDP(ctx context.Context, addr string) (*net.UDPAddr, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: port: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil {
			return nil, fmt.Errorf("resolve %q: %w", addr, lerr)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("resolve %q: no addresses", addr)
		}
		ip = ips[0]
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(port))), nil
}
