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
// Every message carries its sender's commit index c: the sender knows every
// slot below c as chosen, with its value. A node learns a slot in one of
// three ways, and each is safe for the reason given.
//
//  1. By ballot, from a master. A Commit (the heartbeat) or an Accept from the
//     master of ballot b says c; a follower whose entry for a slot below c was
//     accepted under b takes that entry as chosen. This rests on the commit
//     rule: a master proposes at most one value per slot under b, and it
//     announces commit c under b only if, for every slot below c where it
//     proposed under b, it knows that the chosen value is the one it proposed.
//     A master keeps the rule by stepping down the moment it learns a slot
//     chosen with a value other than the one it proposed there under its
//     ballot (markChosen), before its commit index can pass that slot; it never
//     sends a Commit or an Accept under that ballot again. Its commit index
//     otherwise grows only over slots chosen by a majority of its own ballot
//     (the value it proposed) or slots it proposed nothing in. Comparing
//     ballots would not do: a master can learn such a slot from a FetchReply,
//     which carries no ballot, and the chosen entry it installs may carry a
//     ballot below its own (an acceptor keeps the ballot it accepted a value
//     under when it later learns that value was chosen under a higher one).
//     testdata/schedules replays both schedules that broke the older rules.
//  2. By value, from anyone. Promise, Accepted, Nack and FetchReply carry the
//     sender's commit index but no promise about ballots; from them a node
//     advances only over entries it already holds marked chosen, and asks
//     the sender for the rest with a Fetch. FetchReply and Promise mark an
//     entry chosen only if the sender holds it as chosen (below its commit
//     index, or marked by markChosen), so a chosen mark is only ever copied
//     from a node that learned it in one of these three ways (by induction).
//     A Prepare's commit index is not learned from.
//  3. By its own quorum. A master marks a slot chosen when a majority of the
//     voters of the slot's configuration accepted it under its current
//     ballot; acceptors count only after their accept is
//     durable (rule 4), and only votes for the current ballot are counted.
//
// Whichever way it learns, a node that finds a slot chosen with a value other
// than its own accepted one stores the chosen value (markChosen replaces the
// entry) and its own commands there come back (see Own-value semantics). The
// commit index walks only over contiguous slots marked chosen, never over an
// entry that is not.
//
// # Membership
//
// A group's voters change through values in its log (membership.go): a
// change chosen at slot j governs the slots from j+ChangeDelay on, so that a
// proposer knows the configuration of every slot it acts on, and every
// majority above (phase 1 promises, phase 2 accepts) is a majority of the
// voters of the slot's configuration. Learners follow the log but never
// vote; a node that is not a voter never campaigns.
//
// After a restart, entries below the durable commit index are chosen: an
// entry and the commit index that covers it are written in one atomic batch,
// and a batch written without a sync only moves commit indexes, so a crash
// can lose a commit index (learned again) but never keep one without its
// entries.
package paxos
