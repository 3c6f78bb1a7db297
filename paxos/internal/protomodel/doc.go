// Package protomodel is an exhaustive check of the rules of package paxos at
// the level of ballots and values: a small model in Go in the spirit of a TLA+
// specification checked by TLC (issue 8, part 3). It does not import package
// paxos, so that the tests of paxos can import it and hold the core to it.
//
// # What is modelled
//
// N nodes (3 to 7), each an acceptor and a learner; a few ballots, each owned
// by one node and campaigned for at most once (a ballot is never reused,
// acceptor rule 4); a few slots; and one value per (ballot, slot), the value
// that ballot proposes fresh there (a no-op or a batch of commands: their
// content does not matter, only their identity). Values adopted in phase 2
// under rule 5 keep the identity of the ballot that first proposed them.
//
// A node holds its promise, per slot its entry (the ballot and value it
// accepted last, or installed as chosen) with a chosen mark, and its commit
// index. A ballot's proposer is idle, preparing, master or done (stepped
// down), and knows the slot phase 1 started at, its next free slot and the
// value it proposed at each slot.
//
// The network is a set of messages that only grows, as in Lamport's TLA+
// Paxos: a message ever sent may be received at any time, any number of
// times, which covers loss, duplication, delay and reordering. Prepare(b) is
// outstanding from the moment b campaigns and Accept(b, s, v) from the moment
// b proposes v at s; Promise (with the acceptor's entries and chosen marks),
// Accepted and Commit(b, c) messages are recorded in sets. A FetchReply from
// node j carries j's chosen entries below any commit index j has reached (the
// Fetch that asks for it is taken as always outstanding).
//
// The transitions (see ActionKind) are: campaign; promise (rules 1 and 3);
// become master with the promises of a majority, proposing by rule 5 the
// highest-ballot value reported, a chosen value as it is, a fresh value in a
// gap; propose a fresh value in the next free slot; accept (rule 2); count a
// majority of Accepted and mark the value chosen; step down on a Nack; send
// Commit(b, c); learn from Commit(b, c) by ballot (an entry accepted under b
// counts as chosen for a slot below c, and learning stops at the first slot it
// cannot take, where the node would fetch); and install a FetchReply. A
// proposer also steps down when its node sees a higher ballot in a request
// (observeBallot in the core). Chosen marks go through one function, where the
// Rule under test applies: RuleOld (the master keeps its role), RuleNew (a
// master that learns a slot chosen with a value other than the one it
// proposed there under its current ballot steps down at once) or
// RuleBallotCompare (the rejected patch: it steps down if a fetched chosen
// entry's ballot is above its own).
//
// # Invariants, checked in every state
//
//   - commit (the local invariant of the fix): for every Commit(b, c) ever
//     sent, and every slot s < c where b proposed a value, the sender knows
//     that value as chosen at s. It fires at the first bad announcement,
//     before any follower takes a wrong value; Config.SkipCommitInvariant
//     turns it off to search for the consequence.
//   - agreement: no two nodes mark different values chosen for one slot.
//   - chosen: a value a node marks chosen was really chosen, that is, a
//     majority voted for it under one ballot. The votes are the ground
//     truth, kept apart from the entries that later accepts overwrite.
//   - consensus: at most one value per slot is chosen by the votes.
//   - commit-prefix: every slot below a node's commit index is marked chosen.
//
// # What is abstracted away
//
// Time, timers and the failure detector (every enabled step may happen at
// any time), batching, the window, client commands and their ids, snapshots
// and compaction, durability and restarts (a node's state here is its durable
// state, and replies leave only after it: rule 4 is assumed, not checked),
// the Behind Nack (a promise is always exact), and the bounds on Fetch and
// Promise sizes (a FetchReply may cover any prefix). Promises of a ballot that
// is no longer preparing, and Accepted messages of a ballot that is no longer
// master, are forgotten: nothing can receive them any more. Nodes that own no
// ballot are interchangeable, and the search visits one state per class of
// such renamings (symmetry reduction; Config.NoSymmetry turns it off).
//
// # Mapping to package paxos
//
// Rules 1 to 3 and 5 of the paxos package doc are ActPromise, ActAccept and
// ActBecomeMaster; learning by commit index (the Learning section) is
// ActLearnCommit and ActFetchReply; markChosen here is markChosen in
// paxos/learner.go, the one place where a slot becomes chosen on a node, and
// the place where the Rule applies. CommitAllowed, MustStepDown and
// MayTakeByBallot state the same rules as predicates over the core's own
// types, for the core's simulator to assert on every step.
//
// # Running
//
// The tests run small bounds in -short and by default. Bigger bounds (more
// ballots and slots; minutes and gigabytes):
//
//	go test ./paxos/internal/protomodel -run Big -protomodel.big -v -timeout 2h
//
// and BenchmarkCheck measures one mid-sized configuration.
package protomodel
