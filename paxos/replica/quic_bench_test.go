package replica

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// quicNet connects replicas over real QUIC peer connections on 127.0.0.1,
// so that BenchmarkCommit can be compared with and without the network
// stack. Unlike internal/server, it sends one frame per message on the
// group's lane: with several groups the messages of one step then reach a
// peer in several deliveries, which this benchmark shows to cost synced
// writes (compare syncs/commit with BenchmarkCommit).
type quicNet struct {
	nodes map[paxos.NodeID]*quicnet.Node
	reps  map[paxos.NodeID]*Replica
}

type quicTransport struct {
	n    *quicNet
	from paxos.NodeID
}

func (t quicTransport) Send(msgs []paxos.Message) {
	node := t.n.nodes[t.from]
	for i := range msgs {
		m := &msgs[i]
		node.Send(quicnet.NodeID(m.To), int(m.Group), paxos.AppendMessage(nil, m))
	}
}

func newQUICNet(b *testing.B, ids []paxos.NodeID) *quicNet {
	ca, err := pki.NewCA("bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	qn := &quicNet{nodes: map[paxos.NodeID]*quicnet.Node{}, reps: map[paxos.NodeID]*Replica{}}
	conns := map[paxos.NodeID]net.PacketConn{}
	addrs := map[quicnet.NodeID]string{}
	for _, id := range ids {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { pc.Close() })
		conns[id] = pc
		addrs[quicnet.NodeID(id)] = pc.LocalAddr().String()
	}
	for _, id := range ids {
		cert, key, err := ca.IssueNode(strconv.Itoa(int(id)), nil)
		if err != nil {
			b.Fatal(err)
		}
		tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), cert, key)
		if err != nil {
			b.Fatal(err)
		}
		peers := map[quicnet.NodeID]string{}
		for p, a := range addrs {
			if p != quicnet.NodeID(id) {
				peers[p] = a
			}
		}
		node, err := quicnet.New(quicnet.Config{ID: quicnet.NodeID(id), PacketConn: conns[id], Peers: peers, TLS: tlsConf,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Handler: func(from quicnet.NodeID, msg []byte) {
				m, err := paxos.DecodeMessage(msg, paxos.DefaultLimits())
				if err == nil {
					if r := qn.reps[id]; r != nil {
						r.Deliver(m)
					}
				}
			}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { node.Close() })
		qn.nodes[id] = node
	}
	return qn
}
