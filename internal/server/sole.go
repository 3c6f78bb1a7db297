package server

import "sync"

// identityInFlight counts each identity's client proposals in flight on
// this node, across all groups, so that a command can be told apart as its
// identity's only one.
//
// Only such a command is proposed ahead (fairQueue says when it is light in
// its group; this says it is alone on the node), and so marked urgent in
// Paxos (paxos.Message.Urgent), which spares it the group-commit wait on
// every node. A sequential client (one lock operation at a time, the usual
// lock client) gets that on every command; an identity with many clients
// in flight gets none, so its writes keep sharing fsyncs across groups: with
// the per-group test alone, 16 clients of one identity over 4 groups often
// found a group with nothing of theirs in flight and lost 6-10% of their
// throughput to unshared fsyncs (docs/benchmarks.md 8.5).
//
// Invariant (under mu): n[who] is the number of enter(who) calls not yet
// matched by leave(who), and only identities with a positive count are kept.
type identityInFlight struct {
	mu sync.Mutex
	n  map[string]int
}

func newIdentityInFlight() *identityInFlight {
	return &identityInFlight{n: map[string]int{}}
}

// enter counts one more proposal of who and reports whether it is who's
// only one in flight on the node.
func (c *identityInFlight) enter(who string) (sole bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[who]++
	return c.n[who] == 1
}

// leave counts one of who's proposals as done.
func (c *identityInFlight) leave(who string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[who]--; c.n[who] <= 0 {
		delete(c.n, who)
	}
}
