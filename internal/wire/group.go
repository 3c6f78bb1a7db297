package wire

import "hash/fnv"

// GroupOf maps a lock name to its Paxos group. The hash is FNV-1a, fixed
// forever: a name must map to the same group (and so the same fencing-token
// counter) across versions, restarts and clients.
func GroupOf(name string, groups int) uint32 {
	if groups <= 1 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return uint32(h.Sum64() % uint64(groups))
}
