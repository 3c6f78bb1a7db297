// Package paxos implements Multi-Paxos for many groups as a pure, deterministic
// state machine, in the shape of etcd's raft: the core has no goroutines, no
// clock and no I/O. Time arrives through Tick, the network through Step, and
// client commands through Propose. Everything the core wants done comes back in
// one Ready batch for all groups of the node: state to persist, messages to send
// before and after that state is durable, chosen slots to apply, and commands it
// gave up on. The caller persists, sends and applies, then calls Advance.
//
// Many groups live in one Node so that a runtime can persist the changes of
// every group with one synced write and send the messages of every group to a
// peer in one transport write (group commit across groups, field report F3).
//
// # Acceptor rules (field report F7)
//
// These follow Paxos Made Moderately Complex and Lamport's TLA+ specification
// of Paxos; each rule says why it holds.
//
//  1. The promise only ever grows. Prepare(b) is answered with a promise only if
//     b >= promised, and then promised = b. Otherwise the acceptor replies with a
//     Nack that carries its promise, so the proposer learns the ballot to beat.
//     Why: a promise is the acceptor's word that it will not take part in any
//     ballot below b; breaking it lets a lower ballot choose a value that the
//     proposer of b never saw.
//  2. Accept(b, slot, v) is refused if promised > b, and otherwise raises the
//     promise to b and records (b, v) for the slot. Why: raising the promise is
//     what keeps a later, lower ballot from overwriting (b, v) after the
//     acceptor has voted for it (the ambiguous sentence of Paxos Made Simple).
//  3. A promise for ballot b from slot i on carries, for every slot >= i, the
//     highest-ballot value the acceptor accepted, or the chosen value marked as
//     such. Why: the proposer of b must adopt any value that may have been
//     chosen below b.
//  4. No Promise and no Accepted reply leaves a node before the state it vouches
//     for is durable: such replies are only ever returned in Ready.AfterSync.
//     A proposer's own ballot is durable before its Prepare leaves, so a node
//     that crashes and restarts never reuses a ballot with another value.
//  5. Phase 2 of ballot b proposes, for every slot reported in the promises of a
//     majority for b (and only for b), the value of the highest ballot among
//     them, a chosen value as it is, and a no-op for gaps.
//
// # Multi-Paxos
//
// A node that wins phase 1 for ballot b from its commit index on is the master
// of the group. It re-proposes every half-accepted slot it found, then runs
// only phase 2 for new slots, with up to Config.Window slots in flight, until
// a higher ballot outbids it. The master counts its own accept only once that
// accept is durable (it comes back to it through Ready.AfterSync), so on three
// nodes a slot is chosen after one synced write and one reply from the nearest
// peer (F8).
//
// # Own-value semantics (F6)
//
// A slot's value is a batch of commands, each with a unique (client, sequence)
// id. When a slot becomes known as chosen with a value other than the one this
// node proposed there, the commands of its own value go back to the head of its
// queue (if it is still master) or come back in Ready.Dropped, so the caller
// never takes another value for its own. A command succeeds when the runtime
// applies it (see Applier, which drops duplicates of an id).
//
// # Learning
//
// Every message from a master carries its commit index: all slots below it are
// chosen. A follower whose accepted entry for such a slot has the master's
// ballot knows the chosen value; for any other slot it sends Fetch to a peer
// that knows more and installs the chosen entries of the reply.
package paxos
