package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/lockd/lockd/quicnet"
)

// errNoFaults is returned by fault controls on a cluster started without
// Options.Faults.
var errNoFaults = errors.New("local cluster: started without Faults: no fault-injecting socket to control")

func (c *Cluster) udpAddr(i int) net.Addr {
	a, _ := net.ResolveUDPAddr("udp", c.nodes[i].Addr)
	return a
}

// Fault returns node i's fault-injecting socket (nil without
// Options.Faults or while the node is stopped). Links set on it apply to
// packets node i sends; they last until the node stops.
func (c *Cluster) Fault(i int) *quicnet.FaultConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i].cancel == nil {
		return nil
	}
	return c.nodes[i].fault
}

// DelayOneWay delays every packet node from sends to node to by d (one
// way; 0 removes the delay). Client traffic is not delayed.
func (c *Cluster) DelayOneWay(from, to int, d time.Duration) error {
	f := c.Fault(from)
	if f == nil {
		if !c.opts.Faults {
			return errNoFaults
		}
		return fmt.Errorf("local cluster: node %d is stopped", c.nodes[from].ID)
	}
	return f.SetLink(c.udpAddr(to), quicnet.Link{Delay: d})
}

// DelayPeer puts node i at d one-way delay from every other node, both
// ways: what node i sends to a peer and what a peer sends to node i each
// wait d, so a round trip between node i and a peer takes 2d more. Stopped
// nodes are skipped. Client traffic is not delayed.
func (c *Cluster) DelayPeer(i int, d time.Duration) error {
	if !c.opts.Faults {
		return errNoFaults
	}
	for j := range c.nodes {
		if j == i || !c.Running(j) {
			continue
		}
		if c.Running(i) {
			if err := c.DelayOneWay(i, j, d); err != nil {
				return err
			}
		}
		if err := c.DelayOneWay(j, i, d); err != nil {
			return err
		}
	}
	return nil
}

// Isolate cuts node i off from every other node, both ways, while it keeps
// running and serving its clients: a network partition, not a crash.
func (c *Cluster) Isolate(i int) error {
	if !c.opts.Faults {
		return errNoFaults
	}
	for j := range c.nodes {
		if j == i {
			continue
		}
		if f := c.Fault(i); f != nil {
			if err := f.Partition(c.udpAddr(j), quicnet.Both); err != nil {
				return err
			}
		}
		if f := c.Fault(j); f != nil {
			if err := f.Partition(c.udpAddr(i), quicnet.Both); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition and delay on every running node.
func (c *Cluster) Heal() {
	for i := range c.nodes {
		if f := c.Fault(i); f != nil {
			f.Reset()
		}
	}
}

// Masters returns, for each group, the index of the running node that
// serves it, or -1 when none does right now.
func (c *Cluster) Masters(ctx context.Context) []int {
	masters := make([]int, c.opts.Groups)
	for g := range masters {
		masters[g] = -1
	}
	for i := range c.nodes {
		s := c.Server(i)
		if s == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := s.Status(sctx)
		cancel()
		if err != nil {
			continue
		}
		for _, g := range st.Groups {
			if g.Serving && int(g.Group) < len(masters) && masters[g.Group] == -1 {
				masters[g.Group] = i
			}
		}
	}
	return masters
}

// WaitForMasters waits until every group is served by a running node and
// returns the serving node's index per group.
func (c *Cluster) WaitForMasters(ctx context.Context) ([]int, error) {
	for {
		masters := c.Masters(ctx)
		missing := 0
		for _, m := range masters {
			if m < 0 {
				missing++
			}
		}
		if missing == 0 {
			return masters, nil
		}
		select {
		case <-ctx.Done():
			return masters, fmt.Errorf("local cluster: %d of %d groups still have no serving master: %w", missing, len(masters), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
