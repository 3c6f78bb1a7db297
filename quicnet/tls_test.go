package quicnet

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/quic-go/quic-go"
)

// logBuf captures a node's logs so a test can wait for a rejection to have
// happened instead of sleeping.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rawPeerDial dials addr as a peer would, with quic-go directly, so a test
// can present any certificate and send any header.
func rawPeerDial(t *testing.T, addr string, tc *tls.Config, serverName string) (*quic.Conn, error) {
	t.Helper()
	tc = tc.Clone()
	tc.NextProtos = []string{ALPNPeer}
	tc.ServerName = serverName
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, tc, &quic.Config{MaxIdleTimeout: 5 * time.Second})
	if err == nil {
		t.Cleanup(func() { qc.CloseWithError(0, "") })
	}
	return qc, err
}

// sendLane opens a lane stream on qc with the given header and one message.
func sendLane(qc *quic.Conn, from NodeID, lane int, msg []byte) error {
	s, err := qc.OpenStream()
	if err != nil {
		return err
	}
	hdr := binary.AppendUvarint(nil, uint64(from))
	hdr = binary.AppendUvarint(hdr, uint64(lane))
	_, err = s.Write(AppendFrame(AppendFrame(nil, hdr), msg))
	return err
}

// waitClosed waits until qc ends and returns why.
func waitClosed(t *testing.T, qc *quic.Conn) error {
	t.Helper()
	select {
	case <-qc.Context().Done():
		return context.Cause(qc.Context())
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open after 5s; want it refused")
		return nil
	}
}

func TestPeerWithCertificateFromAnotherCAIsRejected(t *testing.T) {
	checkNoLeaks(t)
	good, other := newTestPKI(t), newTestPKI(t)
	// impostorTLS trusts the cluster CA but holds a certificate of another.
	impostorTLS := func(id NodeID) *tls.Config {
		c := other.nodeTLS(id)
		c.RootCAs, c.ClientCAs = good.ca.Pool(), good.ca.Pool()
		return c
	}
	// pair starts node 1 and node 2 (node 1 dials) and has each send one
	// message; it returns both nodes' log buffers and inboxes.
	pair := func(t *testing.T, tls1, tls2 *tls.Config) (n1, n2 *Node, log1, log2 *logBuf, in1, in2 *inbox) {
		addr1, addr2 := deadAddr(t), deadAddr(t)
		peers := map[NodeID]string{1: addr1, 2: addr2}
		log1, log2, in1, in2 = &logBuf{}, &logBuf{}, newInbox(), newInbox()
		n1 = startNode(t, Config{
			ID: 1, ListenAddr: addr1, Peers: peers, TLS: tls1, Handler: in1.handle,
			ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond, Logger: log1.logger(),
		})
		n2 = startNode(t, Config{ID: 2, ListenAddr: addr2, Peers: peers, TLS: tls2, Handler: in2.handle, Logger: log2.logger()})
		n1.Send(2, 0, []byte("one"))
		n2.Send(1, 0, []byte("two"))
		return
	}

	t.Run("dialer refuses the server", func(t *testing.T) {
		n1, n2, log1, _, in1, in2 := pair(t, good.nodeTLS(1), impostorTLS(2))
		waitFor(t, hangGuard, "node 1 to refuse node 2's certificate", func() bool {
			return log1.contains("certificate signed by unknown authority")
		})
		if connected(n1, 2) || connected(n2, 1) || in1.count()+in2.count() != 0 {
			t.Errorf("mesh formed across CAs: %+v / %+v", n1.Stats(), n2.Stats())
		}
	})

	t.Run("server refuses the dialer", func(t *testing.T) {
		_, n2, log1, _, _, in2 := pair(t, impostorTLS(1), good.nodeTLS(2))
		// TLS 1.3 lets the dialer finish first; the server's refusal
		// then closes the connection, which the dialer logs.
		waitFor(t, hangGuard, "node 2 to refuse node 1's certificate", func() bool {
			return log1.contains("unknown certificate authority")
		})
		if s := n2.Stats()[0]; s.Connects != 0 || in2.count() != 0 {
			t.Errorf("node 2 accepted a peer from another CA: %+v", s)
		}
	})
}

func TestClientWithoutCertificateIsRejected(t *testing.T) {
	checkNoLeaks(t)
	p, other := newTestPKI(t), newTestPKI(t)
	n := startServer(t, p, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	foreign := other.clientTLS("mallory")
	foreign.RootCAs = p.ca.Pool() // trusts the server, but its certificate is foreign
	for name, tc := range map[string]*tls.Config{
		"no certificate":            p.clientTLS(""),
		"certificate of another CA": foreign,
	} {
		// TLS 1.3 lets the client finish first, so Dial may succeed;
		// the server's refusal then ends the connection.
		c, err := Dial(ctx, n.Addr().String(), tc)
		if err == nil {
			_, err = request(ctx, c, []byte("hello"))
			c.Close()
		}
		if err == nil {
			t.Errorf("client with %s was served", name)
		} else {
			t.Logf("client with %s: %v", name, err)
		}
	}
	// The good client is served, which also shows the refused ones never
	// reached Accept (the echo server would have answered them).
	if _, err := request(ctx, dial(t, n, p, "alice"), []byte("hello")); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
}

func TestNodeCertificateClaimingWrongIDIsRejected(t *testing.T) {
	checkNoLeaks(t)
	p := newTestPKI(t)

	t.Run("config", func(t *testing.T) {
		_, err := New(Config{ID: 2, ListenAddr: "127.0.0.1:0", TLS: p.nodeTLS(3)})
		if err == nil || !strings.Contains(err.Error(), "certificate is for node 3 but ID is 2") {
			t.Errorf("New with node 3's certificate as node 2: %v", err)
		}
	})

	in4 := newInbox()
	n4 := startNode(t, Config{
		ID: 4, ListenAddr: "127.0.0.1:0", TLS: p.nodeTLS(4), Handler: in4.handle, Logger: testLogger(t),
		Peers: map[NodeID]string{2: deadAddr(t), 3: deadAddr(t), 5: deadAddr(t)},
	})
	target := n4.Addr().String()
	wantRefusal := func(t *testing.T, qc *quic.Conn, code quic.ApplicationErrorCode, text string) {
		t.Helper()
		err := waitClosed(t, qc)
		var ae *quic.ApplicationError
		if !errors.As(err, &ae) || ae.ErrorCode != code || !strings.Contains(ae.ErrorMessage, text) {
			t.Errorf("connection ended with %v; want application error %d mentioning %q", err, code, text)
		}
	}

	t.Run("stream header", func(t *testing.T) {
		// The certificate of node 3, a header claiming node 2.
		qc, err := rawPeerDial(t, target, p.nodeTLS(3), pki.NodeServerName("4"))
		if err != nil {
			t.Fatal(err)
		}
		if err := sendLane(qc, 2, 0, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, qc, codeIdentity, "claims to come from node 2 but the certificate is for node 3")
	})

	t.Run("higher ID dials", func(t *testing.T) {
		qc, err := rawPeerDial(t, target, p.nodeTLS(5), pki.NodeServerName("4"))
		if err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, qc, codeIdentity, "the lower ID dials")
	})

	t.Run("client certificate", func(t *testing.T) {
		qc, err := rawPeerDial(t, target, p.clientTLS("alice"), pki.NodeServerName("4"))
		if err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, qc, codeIdentity, "not a node certificate")
	})

	t.Run("wrong node at the address", func(t *testing.T) {
		// Node 1 believes node 2 lives at node 4's address: TLS refuses
		// node 4's certificate for node 2's name.
		var log1 logBuf
		startNode(t, Config{
			ID: 1, ListenAddr: "127.0.0.1:0", TLS: p.nodeTLS(1), Handler: func(NodeID, []byte) {},
			Peers: map[NodeID]string{2: target}, ReconnectMin: 10 * time.Millisecond, Logger: log1.logger(),
		})
		waitFor(t, hangGuard, "node 1 to refuse node 4 as node 2", func() bool {
			return log1.contains("not " + pki.NodeServerName("2"))
		})
	})

	if in4.count() != 0 {
		t.Errorf("node 4 delivered %d forged messages", in4.count())
	}
	// The holder of node 3's certificate is node 3 as far as TLS goes,
	// so a connection for node 3 was fine; nobody got in as 2 or 5.
	for _, s := range n4.Stats() {
		if s.ID != 3 && s.Connects != 0 {
			t.Errorf("node 4 accepted a connection as node %d", s.ID)
		}
	}
}

// TestRepeatedPeerRefusalIsLoggedOnce: a client certificate on the peer
// ALPN, tried again and again, is refused every time but logged once per
// interval (issue 10: every repeated warning is rate-limited), so that a
// client cannot fill the node's log.
func TestRepeatedPeerRefusalIsLoggedOnce(t *testing.T) {
	checkNoLeaks(t)
	p := newTestPKI(t)
	var logs logBuf
	n := startNode(t, Config{
		ID: 4, ListenAddr: "127.0.0.1:0", TLS: p.nodeTLS(4), Handler: func(NodeID, []byte) {}, Logger: logs.logger(),
		Peers: map[NodeID]string{2: deadAddr(t)},
	})
	const tries = 5
	for i := 0; i < tries; i++ {
		qc, err := rawPeerDial(t, n.Addr().String(), p.clientTLS("alice"), pki.NodeServerName("4"))
		if err != nil {
			t.Fatal(err)
		}
		var ae *quic.ApplicationError
		if err := waitClosed(t, qc); !errors.As(err, &ae) || ae.ErrorCode != codeIdentity {
			t.Fatalf("try %d: connection ended with %v, want a refusal", i, err)
		}
	}
	logs.mu.Lock()
	got := strings.Count(logs.b.String(), "peer connection refused")
	logs.mu.Unlock()
	if got != 1 {
		t.Errorf("%d refusals logged %d times, want once:\n%s", tries, got, logs.b.String())
	}
}
