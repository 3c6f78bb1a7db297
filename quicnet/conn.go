package quicnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// smallFrame is the payload size up to which WriteFrame copies header and
// payload into one buffer and issues a single stream write; larger payloads
// are written in place, after their header.
const smallFrame = 16 << 10

// Conn is a client connection, seen from either end: Node.Accept returns the
// server side, Dial the client side. The other side's certificate has been
// verified against the cluster CA. Methods are safe for concurrent use.
// Errors of a connection that has ended match errors.Is(err, net.ErrClosed).
type Conn struct {
	qc       *quic.Conn
	maxFrame int
	name     string
	cert     *x509.Certificate

	// release frees what Dial created for this connection (its
	// transport and socket); nil on the server side, where the node owns
	// them. It runs once, from Close or when the connection ends.
	release     func()
	releaseOnce sync.Once
}

func newConn(qc *quic.Conn, maxFrame int, release func()) *Conn {
	c := &Conn{qc: qc, maxFrame: maxFrame, release: release}
	if certs := qc.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		c.name = certs[0].Subject.CommonName
		c.cert = certs[0]
	}
	if release != nil {
		context.AfterFunc(qc.Context(), c.releaseNow)
	}
	return c
}

func (c *Conn) releaseNow() {
	if c.release != nil {
		c.releaseOnce.Do(c.release)
	}
}

// PeerName returns the CommonName of the verified certificate the other
// side presented: the client's name (pki.IssueClient) on the server side,
// the node's ("node-3") on the client side.
func (c *Conn) PeerName() string { return c.name }

// PeerCertificate returns the verified leaf certificate the other side
// presented (nil if none), for identities beyond the CommonName (its
// OrganizationalUnit, or whether it is a node certificate).
func (c *Conn) PeerCertificate() *x509.Certificate { return c.cert }

// RemoteAddr returns the other side's UDP address.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// LocalAddr returns this side's UDP address.
func (c *Conn) LocalAddr() net.Addr { return c.qc.LocalAddr() }

// Done returns a channel closed when the connection has ended, for either
// side's reason.
func (c *Conn) Done() <-chan struct{} { return c.qc.Context().Done() }

// OpenStream opens a new bidirectional stream. The other side sees it in
// AcceptStream when the first frame arrives. It waits, within ctx, only when
// the other side's limit of concurrent streams is reached.
func (c *Conn) OpenStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream to %s: %w", c.qc.RemoteAddr(), err)
	}
	return newStream(s, c.maxFrame), nil
}

// AcceptStream returns the next stream the other side opened.
func (c *Conn) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept stream from %s: %w", c.qc.RemoteAddr(), err)
	}
	return newStream(s, c.maxFrame), nil
}

// Close closes the connection, telling the other side, and releases its
// socket if Dial made one. Streams fail afterwards.
func (c *Conn) Close() error {
	err := c.qc.CloseWithError(codeNormal, "closed")
	c.releaseNow()
	return err
}

// Dial connects a client to the node at addr ("host:port") with ALPN
// lockd-client/1 and returns once the handshake is done. tlsConf is
// typically pki.ClientTLSConfig; its ServerName defaults to addr's host.
// Each Conn has its own UDP socket, freed by Close or when the connection
// ends.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config) (*Conn, error) {
	if tlsConf == nil {
		return nil, fmt.Errorf("dial %s: no TLS configuration", addr)
	}
	raddr, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tc := tlsConf.Clone()
	tc.NextProtos = []string{ALPNClient}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: open socket: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	release := func() {
		tr.Close()
		udp.Close()
	}
	qc, err := tr.Dial(ctx, raddr, tc, &quic.Config{
		// A client notices a dead or stopped node within ClientIdleTimeout
		// (its requests, watches and waits then move to another node);
		// keep-alive packets every ClientIdleTimeout/5 cost next to nothing.
		MaxIdleTimeout:        ClientIdleTimeout,
		KeepAlivePeriod:       ClientIdleTimeout / 5,
		MaxIncomingUniStreams: -1,
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return newConn(qc, DefaultMaxFrame, release), nil
}

// Stream is a bidirectional stream carrying frames. One goroutine may read
// while another writes; concurrent writers (or readers) are serialized, so
// frames never interleave.
type Stream struct {
	s   *quic.Stream
	max int

	rmu sync.Mutex // guards br
	br  *bufio.Reader

	wmu  sync.Mutex // guards wbuf and the write side
	wbuf []byte
}

func newStream(s *quic.Stream, max int) *Stream {
	return &Stream{s: s, max: max}
}

// WriteFrame writes payload as one frame. Payloads over the connection's
// frame limit are refused with ErrFrameTooLarge before anything is sent.
func (s *Stream) WriteFrame(payload []byte) error {
	if len(payload) > s.max {
		return fmt.Errorf("write frame: %w", &frameSizeError{size: uint64(len(payload)), limit: s.max})
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var err error
	if len(payload) <= smallFrame {
		s.wbuf = AppendFrame(s.wbuf[:0], payload)
		_, err = s.s.Write(s.wbuf)
	} else {
		s.wbuf = append(s.wbuf[:0], FrameVersion)
		s.wbuf = binary.AppendUvarint(s.wbuf, uint64(len(payload)))
		if _, err = s.s.Write(s.wbuf); err == nil {
			_, err = s.s.Write(payload)
		}
	}
	if err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads the next frame and returns its payload, which the caller
// owns. It returns io.EOF when the other side finished its direction
// cleanly between frames.
func (s *Stream) ReadFrame() ([]byte, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.br == nil {
		s.br = bufio.NewReaderSize(s.s, 16<<10)
	}
	p, err := ReadFrame(s.br, s.max)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read frame: %w", err)
	}
	return p, nil
}

// CloseWrite finishes this side's direction after the frames already
// written; the other side reads io.EOF after them. Reading goes on.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.s.Close()
}

// Close finishes this side's direction like CloseWrite and stops reading:
// use it when done with the stream in both directions.
func (s *Stream) Close() error {
	s.s.CancelRead(0)
	return s.CloseWrite()
}

// SetDeadline makes pending and future reads and writes fail after t (zero
// means no deadline).
func (s *Stream) SetDeadline(t time.Time) error { return s.s.SetDeadline(t) }
