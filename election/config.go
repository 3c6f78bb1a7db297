package election

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Defaults, chosen so that the locks of a group are served again within about
// three seconds of its master dying: the others count the last lease out
// (at most Lease after its last renewal), then the best-placed survivor waits
// its rank delay (CampaignDelay per step, plus up to CampaignDelay/2 of
// jitter), runs phase 1 and gets its own lease chosen, all in a few Ticks.
const (
	DefaultLease           = 2 * time.Second
	DefaultCampaignDelay   = 150 * time.Millisecond
	DefaultTick            = 50 * time.Millisecond
	DefaultHistory         = 64
	DefaultSubscriberQueue = 256
	DefaultHandoverBackoff = 10 * time.Second
)

// Config sets up an Elector. Zero fields take their defaults; Validate
// checks the result once, with errors that name the field.
type Config struct {
	// Self is this node. It is one of Nodes, or a node that waits to join
	// (lockd run --join): that one campaigns for a group only once
	// Elector.SetVoters lists it.
	Self paxos.NodeID
	// Nodes lists the voters every group starts with (the cluster's
	// initial configuration; SetVoters changes them per group). Their
	// order does not matter: the Elector sorts them, and group g prefers
	// the voter at index g mod len(voters) of the sorted list, as the Paxos
	// core does.
	Nodes []paxos.NodeID
	// Groups is the number of Paxos groups (default 16, as in paxos.Config).
	Groups int
	// Lease is how long a master lease lasts (default 2s).
	Lease time.Duration
	// Drift is how much shorter the holder counts its own lease than the
	// others do (default Lease/20). It must cover how much faster the
	// holder's clock may run than another node's over one Lease: with clocks
	// off by up to 1% each, at least 2% of Lease.
	Drift time.Duration
	// RenewEvery is how often the holder renews its lease (default Lease/4).
	// At most half of Lease minus Drift, so that one lost renewal does not
	// end the lease.
	RenewEvery time.Duration
	// CampaignDelay is how long a node waits after a lease ends, per step of
	// its distance from the group's preferred node, before it campaigns
	// (default 150ms); a random jitter of up to half of it is added.
	CampaignDelay time.Duration
	// Tick is how often the driver calls Tick (default 50ms). At most half
	// of RenewEvery and at most CampaignDelay.
	Tick time.Duration
	// HandoverBackoff is how long after handing a group over this node waits
	// before it hands the same group over again (default 10s), so that a
	// preferred node that is reachable but cannot take the group does not
	// make it bounce.
	HandoverBackoff time.Duration
	// History is how many master-change events are kept per group for
	// subscribers that resume (default 64).
	History int
	// SubscriberQueue bounds the events queued for one subscriber (default
	// 256); a subscriber that falls further behind is dropped.
	SubscriberQueue int
	// Rand returns pseudo-random numbers in [0, n). It is injected so that
	// one seed replays one history; nil uses a source seeded from the clock.
	// It is only called with the Elector's lock held.
	Rand func(n int) int

	// mutate switches on deliberately broken rules, for the simulator's
	// mutation tests only. It is unexported so that no user can set it.
	mutate mutation
}

// mutation is a set of deliberate rule breaks that the tests must catch.
type mutation uint8

const (
	// mutHolderFromLearn: the holder counts its lease from when it applied
	// it, without the drift margin, like everyone else.
	mutHolderFromLearn mutation = 1 << iota
	// mutNoWaitOut: a new master serves without waiting out older leases.
	mutNoWaitOut
)

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	if c.Groups == 0 {
		c.Groups = 16
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.Drift == 0 {
		c.Drift = c.Lease / 20
	}
	if c.RenewEvery == 0 {
		c.RenewEvery = c.Lease / 4
	}
	if c.CampaignDelay == 0 {
		c.CampaignDelay = DefaultCampaignDelay
	}
	if c.Tick == 0 {
		c.Tick = min(DefaultTick, c.RenewEvery/2, c.CampaignDelay)
	}
	if c.HandoverBackoff == 0 {
		c.HandoverBackoff = DefaultHandoverBackoff
	}
	if c.History == 0 {
		c.History = DefaultHistory
	}
	if c.SubscriberQueue == 0 {
		c.SubscriberQueue = DefaultSubscriberQueue
	}
	if c.Rand == nil {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(c.Self)))
		c.Rand = rng.IntN
	}
	return c
}

// Validate reports the first invalid field of c, after filling zero fields
// with their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	return c.validate()
}

func (c *Config) validate() error {
	if c.Self == 0 {
		return errors.New("election config: Self must be set (node ids start at 1)")
	}
	if len(c.Nodes) == 0 {
		return errors.New("election config: Nodes must list the cluster's nodes")
	}
	seen := map[paxos.NodeID]bool{}
	for _, n := range c.Nodes {
		if n == 0 {
			return errors.New("election config: Nodes contains 0; node ids start at 1")
		}
		if seen[n] {
			return fmt.Errorf("election config: Nodes lists node %d twice", n)
		}
		seen[n] = true
	}
	if c.Groups < 1 || c.Groups > 4096 {
		return fmt.Errorf("election config: Groups is %d, want 1 to 4096 (the same as the Paxos core's)", c.Groups)
	}
	if c.Lease <= 0 || c.Lease > MaxLeaseDuration {
		return fmt.Errorf("election config: Lease is %v, want more than 0 and at most %v", c.Lease, MaxLeaseDuration)
	}
	if c.Drift <= 0 || c.Drift >= c.Lease/2 {
		return fmt.Errorf("election config: Drift is %v, want more than 0 and below Lease/2 (%v); about Lease/20 covers clocks 1%% off", c.Drift, c.Lease/2)
	}
	if c.RenewEvery <= 0 || 2*c.RenewEvery > c.Lease-c.Drift {
		return fmt.Errorf("election config: RenewEvery is %v, want more than 0 and at most (Lease-Drift)/2 = %v, so that one lost renewal does not end the lease", c.RenewEvery, (c.Lease-c.Drift)/2)
	}
	if c.CampaignDelay <= 0 || c.CampaignDelay > c.Lease {
		return fmt.Errorf("election config: CampaignDelay is %v, want more than 0 and at most Lease (%v)", c.CampaignDelay, c.Lease)
	}
	if c.Tick <= 0 || 2*c.Tick > c.RenewEvery || c.Tick > c.CampaignDelay {
		return fmt.Errorf("election config: Tick is %v, want more than 0, at most RenewEvery/2 (%v) and at most CampaignDelay (%v), or renewals and rank delays are lost to the tick", c.Tick, c.RenewEvery/2, c.CampaignDelay)
	}
	if c.HandoverBackoff < 0 {
		return fmt.Errorf("election config: HandoverBackoff is %v, want 0 (default) or more", c.HandoverBackoff)
	}
	if c.History < 1 || c.History > 1<<16 {
		return fmt.Errorf("election config: History is %d, want 1 to 65536", c.History)
	}
	if c.SubscriberQueue < 1 || c.SubscriberQueue > 1<<20 {
		return fmt.Errorf("election config: SubscriberQueue is %d, want 1 to %d", c.SubscriberQueue, 1<<20)
	}
	return nil
}

// sortedNodes returns the nodes in ascending order, the order in which the
// preferred node of a group is counted.
func sortedNodes(nodes []paxos.NodeID) []paxos.NodeID {
	s := slices.Clone(nodes)
	slices.Sort(s)
	return s
}
