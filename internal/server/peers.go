package server

import (
	"encoding/binary"
	"fmt"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// batchMarker starts a peer frame that carries several Paxos messages; a
// frame that carries one message starts with the codec's version byte.
const batchMarker = 0xff

// maxBatchFrame bounds one batch frame; a larger batch is split.
const maxBatchFrame = 1 << 20

// peerTransport carries Paxos messages over the QUIC peer mesh. Messages of
// one group always take the same lane, so they stay in order per group and a
// slow group cannot hold up the others' lanes. The messages of one step for
// one peer and lane travel as one frame: one wake-up of the lane's writer
// and one decode call per step, not one per message (on a busy node the
// scheduler's latency per wake-up is what a commit waits for).
type peerTransport struct {
	node  *quicnet.Node
	lanes int
	drops func()
}

type laneKey struct {
	to   paxos.NodeID
	lane int
}

// Send implements replica.Transport. It never blocks: quicnet drops a
// frame when the peer's queue is full, and Paxos sends it again.
func (p *peerTransport) Send(msgs []paxos.Message) {
	if len(msgs) == 1 {
		m := &msgs[0]
		p.send(laneKey{m.To, int(m.Group) % p.lanes}, paxos.AppendMessage(nil, m))
		return
	}
	frames := map[laneKey][]byte{}
	var order []laneKey
	for i := range msgs {
		m := &msgs[i]
		k := laneKey{m.To, int(m.Group) % p.lanes}
		b, ok := frames[k]
		if !ok {
			order = append(order, k)
			b = []byte{batchMarker}
		}
		enc := paxos.AppendMessage(nil, m)
		if len(b)+len(enc)+binary.MaxVarintLen64 > maxBatchFrame && len(b) > 1 {
			p.send(k, b)
			b = []byte{batchMarker}
		}
		b = binary.AppendUvarint(b, uint64(len(enc)))
		frames[k] = append(b, enc...)
	}
	for _, k := range order {
		p.send(k, frames[k])
	}
}

func (p *peerTransport) send(k laneKey, b []byte) {
	if err := p.node.Send(quicnet.NodeID(k.to), k.lane, b); err != nil && p.drops != nil {
		p.drops()
	}
}

// onPeerMessage decodes a frame from an authenticated peer and hands its
// messages to the replica. The sender named inside each message must be the
// peer the mesh verified (its certificate), so a node cannot speak for
// another.
func (s *Server) onPeerMessage(from quicnet.NodeID, b []byte) {
	if len(b) > 0 && b[0] == batchMarker {
		b = b[1:]
		for len(b) > 0 {
			n, k := binary.Uvarint(b)
			if k <= 0 || n > uint64(len(b)-k) {
				s.log.Warn("dropped a malformed peer batch", "from", from, "err", fmt.Errorf("bad message length"))
				return
			}
			s.deliverPeer(from, b[k:k+int(n)])
			b = b[k+int(n):]
		}
		return
	}
	s.deliverPeer(from, b)
}

func (s *Server) deliverPeer(from quicnet.NodeID, b []byte) {
	m, err := paxos.DecodeMessage(b, paxos.DefaultLimits())
	if err != nil {
		s.log.Warn("dropped a malformed peer message", "from", from, "err", err)
		return
	}
	if m.From != paxos.NodeID(from) || m.To != s.cfg.ID {
		s.log.Warn("dropped a peer message with wrong addresses", "peer", from, "from", m.From, "to", m.To)
		return
	}
	if r := s.ready.Load(); r != nil && !r.Deliver(m) {
		s.metrics.inboxDrops.Inc()
	}
}
