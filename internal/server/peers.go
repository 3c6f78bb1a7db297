package server

import (
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// peerTransport carries Paxos messages over the QUIC peer mesh. Messages of
// one group always take the same lane, so they stay in order per group and a
// slow group cannot hold up the others' lanes.
type peerTransport struct {
	node  *quicnet.Node
	lanes int
	drops func()
}

// Send implements replica.Transport. It never blocks: quicnet drops a
// message when the peer's queue is full, and Paxos sends it again.
func (p *peerTransport) Send(msgs []paxos.Message) {
	for i := range msgs {
		m := &msgs[i]
		b := paxos.AppendMessage(nil, m)
		if err := p.node.Send(quicnet.NodeID(m.To), int(m.Group)%p.lanes, b); err != nil && p.drops != nil {
			p.drops()
		}
	}
}

// onPeerMessage decodes a message from an authenticated peer and hands it to
// the replica. The sender named inside must be the peer the mesh verified
// (its certificate), so a node cannot speak for another.
func (s *Server) onPeerMessage(from quicnet.NodeID, b []byte) {
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
