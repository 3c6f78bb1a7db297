package quicnet

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/lockd/lockd/internal/ratelog"
)

// Errors a Node returns; match them with errors.Is.
var (
	// ErrClosed: the node (or connection) is closed.
	ErrClosed = errors.New("quicnet: closed")
	// ErrSendToSelf: Send to the node's own ID. A node hands its own
	// messages to itself without the network; quicnet does not loop them
	// back, so that the caller decides how (and in which order) to do it.
	ErrSendToSelf = errors.New("quicnet: send to self")
	// ErrUnknownPeer: Send to an ID that is not in Config.Peers.
	ErrUnknownPeer = errors.New("quicnet: unknown peer")
	// ErrQueueFull: the lane's send queue was full and the message was
	// dropped (and counted in PeerStats.Dropped). Paxos retries; callers
	// may ignore it.
	ErrQueueFull = errors.New("quicnet: send queue full, message dropped")
)

// Application error codes sent in CONNECTION_CLOSE, so the other side's
// logs say why a connection ended.
const (
	codeNormal   quic.ApplicationErrorCode = 0 // node or connection closing
	codeReplaced quic.ApplicationErrorCode = 1 // a newer connection from the same peer took over
	codeIdentity quic.ApplicationErrorCode = 2 // certificate or claimed ID refused
	codeProtocol quic.ApplicationErrorCode = 3 // malformed frame or header
	codeBusy     quic.ApplicationErrorCode = 4 // client backlog full
)

// streamWindow is the most a stream may have in flight unread (quic-go's
// default); see the connection window in New.
const streamWindow = 6 << 20

// Node is one lockd node's endpoint: a UDP socket carrying the peer mesh and
// client connections. Create it with New; all methods are safe for
// concurrent use. Close releases everything and waits for its goroutines.
type Node struct {
	cfg *validated
	log *slog.Logger
	// warn rate-limits the warnings a remote party can repeat at will (a
	// client certificate on the peer ALPN, a full backlog).
	warn     *ratelog.Limiter
	tr       *quic.Transport
	ln       *quic.Listener
	ownsConn net.PacketConn // socket New opened, closed by Close; nil if injected
	qconf    *quic.Config
	// peers is copied on write (AddPeer) and read without locking: Send
	// and the accept path load it once.
	peers   atomic.Pointer[map[NodeID]*peer]
	peersMu sync.Mutex // serialises AddPeer

	ctx     context.Context // cancelled by Close; every goroutine watches it
	cancel  context.CancelFunc
	closing atomic.Bool    // set by Close before cancel; a lock-free check for Send
	wg      sync.WaitGroup // every goroutine the node starts

	backlog chan *Conn // accepted client connections waiting for Accept

	mu      sync.Mutex              // guards clients and closed
	clients map[*quic.Conn]struct{} // open client connections, closed by Close
	closed  bool
}

// New validates cfg, opens (or adopts) the UDP socket, starts listening for
// peers and clients and starts dialing the peers with higher IDs. It returns
// without waiting for any peer: messages sent before a connection is up
// wait in the lane queues.
func New(cfg Config) (*Node, error) {
	v, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:     v,
		log:     v.Logger,
		warn:    ratelog.New(10 * time.Second),
		backlog: make(chan *Conn, v.ClientBacklog),
		clients: make(map[*quic.Conn]struct{}),
	}
	pc := v.PacketConn
	if pc == nil {
		pc, err = net.ListenPacket("udp", v.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("node %d: listen on %s: %w", v.ID, v.ListenAddr, err)
		}
		n.ownsConn = pc
	}
	n.tr = &quic.Transport{Conn: pc, StatelessResetKey: statelessResetKey(v.TLS)}
	n.qconf = &quic.Config{
		HandshakeIdleTimeout: v.DialTimeout,
		MaxIdleTimeout:       v.IdleTimeout,
		KeepAlivePeriod:      v.IdleTimeout / 3,
		MaxIncomingStreams:   int64(max(v.MaxStreamsPerConn, v.Lanes)),
		// The connection window holds every lane's full stream window
		// and one more, so lanes stalled by a slow handler can never
		// use up the connection's credit and stall the other lanes.
		MaxStreamReceiveWindow:     streamWindow,
		MaxConnectionReceiveWindow: uint64(v.Lanes+1) * streamWindow,
		// Nothing in lockd uses unidirectional streams; refusing them
		// keeps a client from parking data in streams nobody reads.
		MaxIncomingUniStreams: -1,
	}
	serverTLS := v.TLS.Clone()
	serverTLS.NextProtos = []string{ALPNPeer, ALPNClient}
	n.ln, err = n.tr.Listen(serverTLS, n.qconf)
	if err != nil {
		n.tr.Close()
		if n.ownsConn != nil {
			n.ownsConn.Close()
		}
		return nil, fmt.Errorf("node %d: listen: %w", v.ID, err)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	peers := make(map[NodeID]*peer)
	for id, addr := range v.Peers {
		if id != v.ID {
			peers[id] = newPeer(n, id, addr)
		}
	}
	n.peers.Store(&peers)
	n.wg.Go(n.acceptLoop)
	for _, p := range peers {
		p.start()
	}
	n.log.Info("quicnet node listening", "addr", pc.LocalAddr(), "peers", len(peers))
	return n, nil
}

// AddPeer adds node id at addr to the peers, at runtime: a node that joins
// the cluster through a membership change (the change in the log carries its
// address). The dialing rule holds as for the peers of Config.Peers: the
// lower ID dials. Adding a known peer with the same address does nothing;
// with another address, or the node's own ID, it is an error (a peer's
// address changes only by replacing the node under a new ID).
func (n *Node) AddPeer(id NodeID, addr string) error {
	if id == 0 || id == n.cfg.ID {
		return fmt.Errorf("node %d: add peer %d: not a peer id", n.cfg.ID, id)
	}
	if addr == "" {
		return fmt.Errorf("node %d: add peer %d: no address", n.cfg.ID, id)
	}
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if n.ctx.Err() != nil {
		return fmt.Errorf("node %d: add peer %d: %w", n.cfg.ID, id, ErrClosed)
	}
	old := *n.peers.Load()
	if p, ok := old[id]; ok {
		if p.addr != addr {
			return fmt.Errorf("node %d: add peer %d at %s: it is already a peer at %s", n.cfg.ID, id, addr, p.addr)
		}
		return nil
	}
	peers := make(map[NodeID]*peer, len(old)+1)
	for k, v := range old {
		peers[k] = v
	}
	p := newPeer(n, id, addr)
	peers[id] = p
	n.peers.Store(&peers)
	p.start()
	n.log.Info("quicnet peer added", "peer", id, "addr", addr)
	return nil
}

// statelessResetKey derives the QUIC stateless reset key from the node's
// private key. It must survive restarts: a restarted node answers packets of
// a connection it forgot with a stateless reset, which the peer accepts only
// if the token comes from the same key; the peer then drops the dead
// connection at once instead of waiting for the idle timeout. Returns nil
// (resets disabled) if the key cannot be encoded.
func statelessResetKey(cfg *tls.Config) *quic.StatelessResetKey {
	der, err := x509.MarshalPKCS8PrivateKey(cfg.Certificates[0].PrivateKey)
	if err != nil {
		return nil
	}
	k := quic.StatelessResetKey(sha256.Sum256(append([]byte("lockd stateless reset key v1\x00"), der...)))
	return &k
}

// ID returns the node's ID.
func (n *Node) ID() NodeID { return n.cfg.ID }

// Addr returns the local address of the node's UDP socket (with the actual
// port when ListenAddr asked for port 0).
func (n *Node) Addr() net.Addr { return n.tr.Conn.LocalAddr() }

// acceptLoop hands every new connection on at once: peer connections to
// their serving goroutine, client connections to Accept through the backlog
// channel. Nothing here waits on a timer (F5).
func (n *Node) acceptLoop() {
	for {
		qc, err := n.ln.Accept(n.ctx)
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Error("accept loop stopped", "err", err)
			}
			return
		}
		switch proto := qc.ConnectionState().TLS.NegotiatedProtocol; proto {
		case ALPNPeer:
			p, err := n.identifyPeer(qc)
			if err != nil {
				n.warn.Warn(n.log, "peer-refused/"+hostOf(qc.RemoteAddr()), "peer connection refused", "remote", qc.RemoteAddr(), "err", err)
				n.closeAsync(qc, codeIdentity, err.Error())
				continue
			}
			n.wg.Go(func() { p.serve(qc) })
		case ALPNClient:
			n.addClient(qc)
		default:
			n.closeAsync(qc, codeProtocol, fmt.Sprintf("unknown protocol %q", proto))
		}
	}
}

// identifyPeer maps an accepted peer connection to the peer its verified
// certificate names, and enforces the dialing rule (lower ID dials).
func (n *Node) identifyPeer(qc *quic.Conn) (*peer, error) {
	id, err := peerNodeID(qc)
	if err != nil {
		return nil, err
	}
	p, ok := (*n.peers.Load())[id]
	switch {
	case !ok:
		return nil, fmt.Errorf("node %d is not a configured peer of node %d", id, n.cfg.ID)
	case id > n.cfg.ID:
		return nil, fmt.Errorf("node %d dialed node %d, but the lower ID dials", id, n.cfg.ID)
	}
	return p, nil
}

// addClient registers a client connection and offers it to Accept without
// blocking the accept loop; a full backlog refuses the client as busy.
func (n *Node) addClient(qc *quic.Conn) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.closeAsync(qc, codeNormal, "node closing")
		return
	}
	n.clients[qc] = struct{}{}
	n.mu.Unlock()
	// Forget the connection once it ends, however it ends.
	context.AfterFunc(qc.Context(), func() {
		n.mu.Lock()
		delete(n.clients, qc)
		n.mu.Unlock()
	})
	select {
	case n.backlog <- newConn(qc, n.cfg.MaxFrame, nil):
	default:
		n.warn.Warn(n.log, "backlog-full", "client refused: accept backlog full", "remote", qc.RemoteAddr(), "backlog", n.cfg.ClientBacklog)
		n.closeAsync(qc, codeBusy, "server busy: too many connections waiting to be accepted; retry later")
	}
}

// hostOf is the host part of addr, so that one remote host's repeated
// refusals share a rate-limit key whatever port it dials from.
func hostOf(addr net.Addr) string {
	if h, _, err := net.SplitHostPort(addr.String()); err == nil {
		return h
	}
	return addr.String()
}

// closeAsync closes qc without holding up the accept loop:
// CloseWithError waits for the connection's goroutine to finish, and the
// next connection must not wait behind that (F5).
func (n *Node) closeAsync(qc *quic.Conn, code quic.ApplicationErrorCode, reason string) {
	n.wg.Go(func() { qc.CloseWithError(code, reason) })
}

// Accept returns the next client connection (ALPN lockd-client/1), whose
// certificate TLS has verified against the cluster CA. It returns as soon as
// a connection's handshake completes. It fails with ErrClosed after Close,
// or with ctx's error.
func (n *Node) Accept(ctx context.Context) (*Conn, error) {
	if n.closing.Load() {
		return nil, fmt.Errorf("node %d: accept: %w", n.cfg.ID, ErrClosed)
	}
	select {
	case c := <-n.backlog:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.ctx.Done():
		return nil, fmt.Errorf("node %d: accept: %w", n.cfg.ID, ErrClosed)
	}
}

// Close closes every connection (telling the other sides), stops the peer
// dialers and writers, waits for all goroutines (including running Handler
// calls) to return, and closes the socket if New opened it. Messages still
// queued are discarded. Close is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	clients := make([]*quic.Conn, 0, len(n.clients))
	for qc := range n.clients {
		clients = append(clients, qc)
	}
	n.mu.Unlock()

	// Cancel first: from here on no peer installs a new connection (see
	// peer.install), so the sweep below misses none.
	n.closing.Store(true)
	n.peersMu.Lock() // no AddPeer starts a peer past this point
	n.cancel()
	n.peersMu.Unlock()
	for _, p := range *n.peers.Load() {
		p.closeConn()
	}
	for _, qc := range clients {
		qc.CloseWithError(codeNormal, "node closing")
	}
	n.wg.Wait()
	err := n.ln.Close()
	// Connections whose handshake finished after the accept loop stopped
	// wait in quic-go's accept queue; Transport.Close would drop them
	// without a word, leaving their clients to time out. Take them and
	// close them properly. (Handshakes still in flight are refused by
	// Listener.Close.) Accept returns at once when the queue is empty.
	drain, cancel := context.WithTimeout(context.Background(), time.Second)
	for {
		qc, aerr := n.ln.Accept(drain)
		if aerr != nil {
			break
		}
		qc.CloseWithError(codeNormal, "node closing")
	}
	cancel()
	if terr := n.tr.Close(); err == nil {
		err = terr
	}
	if n.ownsConn != nil {
		if cerr := n.ownsConn.Close(); err == nil {
			err = cerr
		}
	}
	n.log.Info("quicnet node closed")
	if err != nil {
		return fmt.Errorf("node %d: close: %w", n.cfg.ID, err)
	}
	return nil
}

// PeerStats describes the link to one peer. Counters only grow.
type PeerStats struct {
	ID        NodeID
	Addr      string // configured address
	Connected bool   // a connection is up now
	Connects  uint64 // connections established so far (dialed or accepted)
	Sent      uint64 // messages handed to QUIC
	Dropped   uint64 // messages refused by Send because the lane queue was full
	Lost      uint64 // messages taken from a queue but not written: the connection failed
	Received  uint64 // messages delivered to Handler
	Queued    int    // messages waiting in the lane queues now
}

// Stats returns one PeerStats per peer, sorted by ID.
func (n *Node) Stats() []PeerStats {
	peers := *n.peers.Load()
	out := make([]PeerStats, 0, len(peers))
	for _, p := range peers {
		out = append(out, p.stats())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
