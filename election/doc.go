// Package election makes and keeps the masters of lockd's Paxos groups, with
// leases. The Paxos core runs with AutoCampaign off; an Elector decides when
// this node runs phase 1 for a group, proposes lease commands through the
// group's own log, and tells the server whether this node may serve the
// group right now (Serving), for instance answer reads without a Paxos round.
//
// The Elector is pure and deterministic: no goroutines, no clock, no I/O.
// Time comes in as arguments, randomness through Config.Rand, the log through
// Applied, and what to do goes out of Tick as Actions. Run is a small driver
// that plays it against a *replica.Replica.
//
// # Rules
//
// Each rule says why it holds; rules_test.go has one test per rule.
//
//  1. A master lease is a command chosen in the group's log: "node n is
//     master for L" with a nonce. Why: the log orders leases the same way on
//     every node, so "the last lease command applied" names one master, and
//     a lease chosen later always supersedes an earlier one.
//  2. The holder counts L from the moment it sent the proposal, minus a drift
//     margin; every other node counts it from the moment it applied it. Why:
//     the command is chosen after it was sent and applied after it was
//     chosen, so the holder's lease ends first, by a margin that covers
//     clocks running at slightly different speeds. The nonce is how the
//     holder tells its own proposal (and so its send time) when it is
//     applied; an own lease of an earlier incarnation, whose send time is
//     lost, is treated as another node's.
//  3. A node serves group g only when the last lease command of g it applied
//     is its own lease, that lease holds by its conservative count, and every
//     lease of another holder it applied is over by its own clock. Why: the
//     old master learned nothing of the new lease and serves until its own
//     count ends; the new master applied the old lease before its own (log
//     order) and after the old master sent it, so by waiting it out it starts
//     after the old master stopped. This is what makes two masters at one
//     real instant impossible, whatever the order of campaigns.
//  4. A node campaigns for g only when no lease it knows of may still be in
//     force, and then only after a delay of CampaignDelay per step of its
//     distance from g's preferred node (g mod N in the sorted node list),
//     plus a jitter. Why: the preferred node goes first, so masters spread
//     over the nodes and do not duel; the jitter breaks ties when the
//     preferred node is down. A campaign is also held back while Paxos hears
//     another live master (for up to one Lease: its lease is most likely on
//     its way through a log this node has not caught up with) and while this
//     node sees no majority up (a campaign it cannot win only raises
//     ballots that later disrupt the live master).
//  5. A node that won phase 1 proposes its lease only once it has applied
//     every slot phase 1 found. Why: so that it knows every lease chosen
//     before its own, and does not supersede a live master it had not heard
//     of; rule 3 keeps this safe anyway, this keeps it quiet.
//  6. The holder renews every RenewEvery (L/4 by default), well before the
//     lease ends, without first asking the replica for its status (on a
//     busy node that query waits behind client traffic; after a failed
//     proposal the next one asks); when renewals fail it stops serving at its own conservative
//     expiry at the latest (rule 2), and it keeps trying, from the next Tick
//     on, until another command supersedes its lease. When it loses Paxos
//     mastership while it holds the lease, it campaigns again.
//  7. Handover: a node that serves g while g's preferred node is up (PeerUp)
//     stops serving first, then proposes a release of g in favour of the
//     preferred node. Once the release is applied, every node treats g as
//     masterless at once, and the preferred node campaigns without the rank
//     delay. Why: a node that comes back takes its share back within a few
//     round trips, not a lease later. A release counts only against the
//     holder's own latest lease of the same incarnation sent before it, so a
//     stale release chosen late cannot end a newer lease; the holder forgets
//     the send times of its earlier proposals when it gives up, so a renewal
//     still in flight cannot make it serve again. A node hands the same group
//     over at most once per HandoverBackoff, so a preferred node that is up
//     but cannot take the group does not make it bounce. A node about to
//     stop calls Retire: it hands every group it holds over the same way
//     (to the preferred node, or the next node up), campaigns no more, and
//     keeps running until Holding, then Handing, is zero.
//
// "No master" is announced when a lease runs out by this node's count: Run
// waits for NextExpiry between ticks, so events agree with leases even when
// ticks run late.
//
// # Events
//
// Every change of a group's master is an Event with an epoch derived from
// the log (see Event), so that events of different nodes compare: a client
// may resume on another node. "No master" is an event too, when a lease runs
// out or is released. Each event also carries Seq, the number of master
// changes in the group's log so far: the same on every node, one more at
// each change, so that a reader of one stream sees a gap as a jump of more
// than one (the rule is spelled out at Event). Each group keeps a bounded
// history; Subscribe (and Resume) resume from given epochs without gaps, or
// fail with a *ResyncError that carries the current state. Subscribers read from bounded channels; one that falls
// behind is dropped with ErrSlowSubscriber and never holds up the election.
//
// # Defaults
//
// Lease 2s, Drift 100ms (Lease/20), RenewEvery 500ms (Lease/4),
// CampaignDelay 150ms per rank plus up to 75ms of jitter, Tick 50ms. When a
// master dies, the others count out its last renewal (made up to RenewEvery
// before it died), the best-placed survivor waits its rank delay, runs phase
// 1 and gets its lease chosen: the group is served again after
// Lease - RenewEvery + CampaignDelay*rank + jitter + a few round trips, about
// 1.7 to 2.4 s (BenchmarkFailover measures about 2.0 s on average on three
// replicas; TestDefaultsServeAgainWithinThreeSeconds checks the bound).
//
// # What the server must do
//
// Route every applied lease command to Applied, in log order, with the
// clock it also passes to Serving and Tick (a restarted node replays its log
// through Applied, which errs on the safe side). Report peers with PeerUp or
// DriverConfig.PeerUp. Check Serving before answering anything that needs the
// master's authority.
package election
