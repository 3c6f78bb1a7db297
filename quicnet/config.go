package quicnet

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/lockd/lockd/internal/pki"
)

// NodeID names a lockd node. Zero is not a valid ID. The ID is part of the
// node's certificate (pki.NodeServerName of its decimal form), and the
// lower of two IDs dials the connection between them.
type NodeID uint32

// String returns the decimal form used in certificates and logs.
func (id NodeID) String() string { return strconv.FormatUint(uint64(id), 10) }

// ALPN protocol names; the "/1" is the protocol version.
const (
	ALPNPeer   = "lockd-peer/1"
	ALPNClient = "lockd-client/1"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultLanes         = 4
	DefaultQueueLen      = 1024
	DefaultClientBacklog = 128
	DefaultReconnectMin  = 50 * time.Millisecond
	DefaultReconnectMax  = 5 * time.Second
	DefaultDialTimeout   = 3 * time.Second
	DefaultIdleTimeout   = 15 * time.Second
	// ClientIdleTimeout is the idle timeout of connections made by Dial:
	// how long a request in flight to a node that died waits before the
	// client retries it elsewhere. Measured with lockctl bench failover:
	// at 5s the clients' first success on a dead master's groups came at
	// 5.0s although the groups were served again at 1.3–2.3s.
	ClientIdleTimeout        = 2 * time.Second
	DefaultMaxStreamsPerConn = 100
)

// maxLanes bounds Config.Lanes and the lane numbers a peer may announce.
const maxLanes = 64

// Config describes one node of the mesh. New validates it once and names the
// offending field in its error; the zero value of every optional field picks
// the default documented beside it.
type Config struct {
	// ID is this node's ID; it must match the node certificate in TLS.
	ID NodeID
	// ListenAddr is the UDP address to listen on, such as "0.0.0.0:7400"
	// or "127.0.0.1:0". It is ignored when PacketConn is set.
	ListenAddr string
	// PacketConn, when set, is used instead of opening a socket on
	// ListenAddr; this is how tests put a FaultConn under a node. The Node
	// does not close it: the caller owns it and closes it after Node.Close.
	PacketConn net.PacketConn
	// Peers maps the other nodes' IDs to their UDP addresses ("host:port").
	// An entry for ID itself is allowed (a shared cluster list) and ignored.
	Peers map[NodeID]string
	// TLS is the node's TLS configuration, as pki.NodeTLSConfig builds it:
	// the node certificate, the cluster CA as root and client CA, and
	// tls.RequireAndVerifyClientCert. New clones it; NextProtos and
	// ServerName are set per use.
	TLS *tls.Config
	// Handler receives every message from a peer. It is called from one
	// goroutine per peer lane, so calls for different lanes or peers run
	// concurrently, and calls for one (peer, lane) come in send order. msg
	// belongs to the handler. A handler that blocks stalls only its lane,
	// and through QUIC flow control, the sender's lane. Required when there
	// are peers; Close waits for running calls to return.
	Handler func(from NodeID, msg []byte)
	// Lanes is the number of streams per peer, 1 to 64; default 4.
	Lanes int
	// QueueLen is the capacity of each lane's send queue, in messages;
	// default 1024. Send drops (and counts) messages beyond it.
	QueueLen int
	// MaxFrame is the largest message accepted, in bytes, on the peer mesh
	// and on client streams; default DefaultMaxFrame, at most 64 MiB. All
	// nodes of a cluster must agree: a node closes a peer connection that
	// carries a frame over its own limit.
	MaxFrame int
	// ClientBacklog is how many handshaken client connections may wait for
	// Accept; default 128. Beyond it new clients are refused as busy.
	ClientBacklog int
	// MaxStreamsPerConn bounds the concurrent streams a client may open on
	// one connection; default 100.
	MaxStreamsPerConn int
	// ReconnectMin and ReconnectMax bound the pause between dial attempts
	// to a peer. The pause doubles after each failed attempt (and after a
	// connection that ends within ReconnectMax, so a peer that accepts and
	// then refuses is not hammered), is jittered over its upper half, and
	// falls back to ReconnectMin once a connection has stayed up for
	// ReconnectMax. Defaults 50ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// DialTimeout bounds one dial attempt to a peer; default 3s.
	DialTimeout time.Duration
	// IdleTimeout closes a connection that hears nothing for this long;
	// keep-alive packets go out at a third of it, so only a dead or
	// partitioned peer hits it. Default 15s.
	IdleTimeout time.Duration
	// Logger receives the node's logs; default slog.Default().
	Logger *slog.Logger
}

// validated is a Config with defaults applied and the Peers map copied.
type validated struct {
	Config
}

// validate checks c once and fills in defaults; errors name the field.
func (c Config) validate() (*validated, error) {
	v := &validated{Config: c}
	if c.ID == 0 {
		return nil, errors.New("quicnet config: ID: must be non-zero")
	}
	// Keep a copy: the caller may reuse its map.
	v.Peers = make(map[NodeID]string, len(c.Peers))
	for id, addr := range c.Peers {
		v.Peers[id] = addr
	}
	if c.PacketConn == nil {
		if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
			return nil, fmt.Errorf("quicnet config: ListenAddr %q: %w", c.ListenAddr, err)
		}
	}
	peers := 0
	for id, addr := range c.Peers {
		if id == 0 {
			return nil, fmt.Errorf("quicnet config: Peers: ID 0 (address %q) is not a valid node ID", addr)
		}
		if id == c.ID {
			continue
		}
		peers++
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("quicnet config: Peers[%d] %q: %w", id, addr, err)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 || host == "" {
			return nil, fmt.Errorf("quicnet config: Peers[%d] %q: want host:port with a non-zero numeric port", id, addr)
		}
	}
	if peers > 0 && c.Handler == nil {
		return nil, errors.New("quicnet config: Handler: must be set when there are peers")
	}
	if err := checkNodeTLS(c.TLS, c.ID); err != nil {
		return nil, fmt.Errorf("quicnet config: TLS: %w", err)
	}
	if c.Logger == nil {
		v.Logger = slog.Default()
	}
	v.Logger = v.Logger.With("node", c.ID)
	type intField struct {
		name     string
		p        *int
		def, max int
	}
	for _, f := range []intField{
		{"Lanes", &v.Lanes, DefaultLanes, maxLanes},
		{"QueueLen", &v.QueueLen, DefaultQueueLen, 1 << 20},
		{"MaxFrame", &v.MaxFrame, DefaultMaxFrame, maxFrameLimit},
		{"ClientBacklog", &v.ClientBacklog, DefaultClientBacklog, 1 << 16},
		{"MaxStreamsPerConn", &v.MaxStreamsPerConn, DefaultMaxStreamsPerConn, 1 << 16},
	} {
		switch {
		case *f.p == 0:
			*f.p = f.def
		case *f.p < 0 || *f.p > f.max:
			return nil, fmt.Errorf("quicnet config: %s: %d is outside 1..%d", f.name, *f.p, f.max)
		}
	}
	type durField struct {
		name string
		p    *time.Duration
		def  time.Duration
	}
	for _, f := range []durField{
		{"ReconnectMin", &v.ReconnectMin, DefaultReconnectMin},
		{"ReconnectMax", &v.ReconnectMax, DefaultReconnectMax},
		{"DialTimeout", &v.DialTimeout, DefaultDialTimeout},
		{"IdleTimeout", &v.IdleTimeout, DefaultIdleTimeout},
	} {
		switch {
		case *f.p == 0:
			*f.p = f.def
		case *f.p < 0:
			return nil, fmt.Errorf("quicnet config: %s: %v must not be negative", f.name, *f.p)
		}
	}
	if v.ReconnectMax < v.ReconnectMin {
		return nil, fmt.Errorf("quicnet config: ReconnectMax: %v is below ReconnectMin %v", v.ReconnectMax, v.ReconnectMin)
	}
	if v.IdleTimeout < 300*time.Millisecond {
		return nil, fmt.Errorf("quicnet config: IdleTimeout: %v is too short to survive a few lost keep-alive packets; use at least 300ms", v.IdleTimeout)
	}
	return v, nil
}

// checkNodeTLS verifies that cfg can both serve and dial with mutual
// authentication, and that its certificate is the one of node id.
func checkNodeTLS(cfg *tls.Config, id NodeID) error {
	switch {
	case cfg == nil:
		return errors.New("must be set (see pki.NodeTLSConfig)")
	case len(cfg.Certificates) == 0:
		return errors.New("no certificate: build it with pki.NodeTLSConfig")
	case cfg.RootCAs == nil || cfg.ClientCAs == nil:
		return errors.New("RootCAs and ClientCAs must both hold the cluster CA")
	case cfg.ClientAuth != tls.RequireAndVerifyClientCert:
		return errors.New("ClientAuth must be tls.RequireAndVerifyClientCert: peers and clients must prove who they are")
	}
	leaf, err := leafCert(&cfg.Certificates[0])
	if err != nil {
		return err
	}
	got, ok := pki.NodeIDFromCert(leaf)
	if !ok {
		return fmt.Errorf("certificate %q carries no node identity", leaf.Subject.CommonName)
	}
	if got != id.String() {
		return fmt.Errorf("certificate is for node %s but ID is %d", got, id)
	}
	return nil
}
