package quicnet_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/quicnet"
)

// A node serving one client request: the cluster CA issues a node and a
// client certificate, the node accepts the client's connection and stream,
// and answers one frame.
func Example() {
	ca, err := pki.NewCA("example cluster", time.Hour)
	if err != nil {
		panic(err)
	}
	nodeCert, nodeKey, _ := ca.IssueNode("1", nil) // 127.0.0.1 and localhost
	nodeTLS, err := pki.NodeTLSConfig(ca.CertPEM(), nodeCert, nodeKey)
	if err != nil {
		panic(err)
	}
	node, err := quicnet.New(quicnet.Config{
		ID:         1,
		ListenAddr: "127.0.0.1:0",
		TLS:        nodeTLS,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer node.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { // the server: answer one request
		c, err := node.Accept(ctx)
		if err != nil {
			return
		}
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		req, _ := s.ReadFrame()
		s.WriteFrame(fmt.Appendf(nil, "%s, %s", req, c.PeerName()))
		s.CloseWrite()
	}()

	clientCert, clientKey, _ := ca.IssueClient("alice")
	clientTLS, err := pki.ClientTLSConfig(ca.CertPEM(), clientCert, clientKey)
	if err != nil {
		panic(err)
	}
	c, err := quicnet.Dial(ctx, node.Addr().String(), clientTLS)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	s, err := c.OpenStream(ctx)
	if err != nil {
		panic(err)
	}
	s.WriteFrame([]byte("hello"))
	reply, err := s.ReadFrame()
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s (served by %s)\n", reply, c.PeerName())
	// Output: hello, alice (served by node-1)
}
