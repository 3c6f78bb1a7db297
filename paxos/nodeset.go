package paxos

import "math/bits"

// nodeSet is a set of nodes by their index in Config.Nodes (at most 64).
type nodeSet uint64

func (s nodeSet) has(i int) bool { return s&(1<<uint(i)) != 0 }
func (s *nodeSet) add(i int)     { *s |= 1 << uint(i) }
func (s nodeSet) count() int     { return bits.OnesCount64(uint64(s)) }
