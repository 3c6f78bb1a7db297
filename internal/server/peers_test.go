package server

import (
	"testing"

	"github.com/lockd/lockd/paxos"
)

// FuzzPeerFrame: any frame from a peer is decoded without panicking.
func FuzzPeerFrame(f *testing.F) {
	m := paxos.Message{Type: paxos.MsgAccepted, Group: 1, From: 2, To: 1, Slot: 9}
	one := paxos.AppendMessage(nil, &m)
	f.Add(one)
	f.Add(append([]byte{batchMarker, byte(len(one))}, one...))
	f.Add([]byte{batchMarker, 0xff, 0xff, 0xff, 0xff, 0x0f})
	s := &Server{cfg: Config{ID: 1}, log: discardLogger(), metrics: newMetrics()}
	f.Fuzz(func(t *testing.T, b []byte) {
		s.onPeerMessage(2, b)
	})
}
