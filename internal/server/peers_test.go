package server

import (
	"slices"
	"testing"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
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

// TestPeerTransportOneFramePerPeer: the messages of one Send for one peer,
// from several groups, leave as one frame on lane 0 and come out whole and
// in order; a large message takes its group's bulk lane.
func TestPeerTransportOneFramePerPeer(t *testing.T) {
	type frame struct {
		to   quicnet.NodeID
		lane int
		b    []byte
	}
	var sent []frame
	p := &peerTransport{lanes: 4, sendFrame: func(to quicnet.NodeID, lane int, b []byte) error {
		sent = append(sent, frame{to, lane, b})
		return nil
	}}
	big := paxos.Message{Type: paxos.MsgFetchReply, Group: 5, From: 1, To: 2, Slot: 1,
		Entries: []paxos.Entry{{Slot: 1, Value: paxos.Value{Cmds: []paxos.Command{{Data: make([]byte, bulkMessage)}}}}}}
	msgs := []paxos.Message{
		{Type: paxos.MsgAccept, Group: 0, From: 1, To: 2, Slot: 7},
		{Type: paxos.MsgAccept, Group: 3, From: 1, To: 3, Slot: 8},
		{Type: paxos.MsgCommit, Group: 2, From: 1, To: 2, Commit: 4},
		big,
		{Type: paxos.MsgAccepted, Group: 1, From: 1, To: 2, Slot: 9},
	}
	p.Send(msgs)
	got := map[quicnet.NodeID][]paxos.Message{}
	lanes := map[quicnet.NodeID][]int{}
	for _, f := range sent {
		lanes[f.to] = append(lanes[f.to], f.lane)
		err := splitPeerFrame(f.b, func(b []byte) {
			m, err := paxos.DecodeMessage(b, paxos.DefaultLimits())
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			got[f.to] = append(got[f.to], m)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := []int{0, 1 + 5%3}; !slices.Equal(lanes[2], want) {
		t.Errorf("frames to node 2 on lanes %v, want %v (one small-message frame, one bulk)", lanes[2], want)
	}
	if want := []int{0}; !slices.Equal(lanes[3], want) {
		t.Errorf("frames to node 3 on lanes %v, want %v", lanes[3], want)
	}
	var slots []uint64
	for _, m := range got[2] {
		slots = append(slots, m.Slot)
	}
	if want := []uint64{7, 0, 9, 1}; !slices.Equal(slots, want) {
		t.Errorf("node 2 got slots %v, want %v", slots, want)
	}
	if len(got[3]) != 1 || got[3][0].Slot != 8 {
		t.Errorf("node 3 got %v, want the one accept for slot 8", got[3])
	}
}

func TestSplitPeerFrameRefusesABadLength(t *testing.T) {
	n := 0
	err := splitPeerFrame([]byte{batchMarker, 1, 0xAA, 5, 0xBB}, func([]byte) { n++ })
	if err == nil || n != 1 {
		t.Fatalf("got %v after %d messages, want an error after the first message", err, n)
	}
}

// BenchmarkPeerTransportSend: one step's messages, 8 groups to 2 peers.
func BenchmarkPeerTransportSend(b *testing.B) {
	p := &peerTransport{lanes: 4, sendFrame: func(quicnet.NodeID, int, []byte) error { return nil }}
	var msgs []paxos.Message
	for g := range 8 {
		for _, to := range []paxos.NodeID{2, 3} {
			msgs = append(msgs, paxos.Message{Type: paxos.MsgAccept, Group: paxos.GroupID(g), From: 1, To: to, Slot: 9,
				Entries: []paxos.Entry{{Slot: 9, Value: paxos.Value{Cmds: []paxos.Command{{Data: make([]byte, 64)}}}}}})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Send(msgs)
	}
}
