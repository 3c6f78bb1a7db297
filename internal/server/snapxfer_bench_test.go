package server

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// BenchmarkSnapshotTransferQUIC transfers the snapshot of a group of
// 100,000 locks between two quicnet nodes over loopback, on the snapshot
// lane, as FetchSnapshot does between lockd nodes; it reports MB/s and the
// snapshot's size.
func BenchmarkSnapshotTransferQUIC(b *testing.B) {
	_, data := bigGroup(b, 100_000)
	ca, err := pki.NewCA("bench CA", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	conns := make([]net.PacketConn, 2)
	peers := map[quicnet.NodeID]string{}
	for i := range conns {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close()
		conns[i] = pc
		peers[quicnet.NodeID(i+1)] = pc.LocalAddr().String()
	}
	store := &memSnaps{slot: map[paxos.GroupID]uint64{0: 100}, data: map[paxos.GroupID][]byte{0: data}}
	ids := []paxos.NodeID{1, 2}
	xs := make([]*snapXfer, 2)
	for i := range xs {
		id := paxos.NodeID(i + 1)
		certPEM, keyPEM, err := ca.IssueNode(strconv.Itoa(i+1), nil)
		if err != nil {
			b.Fatal(err)
		}
		tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			b.Fatal(err)
		}
		x := newSnapXfer(id, ids, nil, store, discardLogger())
		xs[i] = x
		n, err := quicnet.New(quicnet.Config{ID: quicnet.NodeID(id), PacketConn: conns[i], Peers: peers, TLS: tlsConf, Lanes: snapLane + 1,
			Logger: discardLogger(), Handler: func(from quicnet.NodeID, msg []byte) { x.onFrame(paxos.NodeID(from), msg) }})
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		x.setNode(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, _, err := xs[0].FetchSnapshot(ctx, 2, 0, 1); err != nil { // connect and warm up
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, got, err := xs[0].FetchSnapshot(ctx, 2, 0, 1); err != nil || len(got) != len(data) {
			b.Fatalf("fetch: %d bytes, %v", len(got), err)
		}
	}
	b.ReportMetric(float64(len(data)), "snapshot-bytes")
}
