package replica

import (
	"sync"

	"github.com/lockd/lockd/paxos"
)

// MemNetwork connects replicas of one process without a network, for tests
// and benchmarks of everything but the transport. Messages to a node that is
// cut off, or not registered, are dropped, as a real network would.
type MemNetwork struct {
	mu    sync.RWMutex
	nodes map[paxos.NodeID]*Replica
	cut   map[paxos.NodeID]bool
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: map[paxos.NodeID]*Replica{}, cut: map[paxos.NodeID]bool{}}
}

// Register makes r reachable as node id (nil removes it).
func (n *MemNetwork) Register(id paxos.NodeID, r *Replica) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r == nil {
		delete(n.nodes, id)
		return
	}
	n.nodes[id] = r
}

// Isolate cuts node id off from everyone (or heals it with false).
func (n *MemNetwork) Isolate(id paxos.NodeID, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[id] = cut
}

// Send implements Transport.
func (n *MemNetwork) Send(msgs []paxos.Message) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, m := range msgs {
		if n.cut[m.From] || n.cut[m.To] {
			continue
		}
		if r := n.nodes[m.To]; r != nil {
			r.Deliver(m)
		}
	}
}
