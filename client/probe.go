package client

import (
	"context"

	"github.com/lockd/lockd/internal/wire"
)

// probe learns, in the background, whether the down node addr answers
// again: it sends a Hello to addr alone (dialing first if there is no
// connection), and the answer clears the down mark (invoke marks every node
// that answers up). One probe per node runs at a time.
//
// A dial is not enough: a node that was only slow (back from a pause, or on
// a loaded machine) is marked down while its connection stays up, and
// requests avoid it while the other nodes redirect to it, so without a
// probe nothing would ever be sent to it again and every request of its
// groups would fail for as long as that connection lives.
func (c *Client) probe(addr string) {
	if addr == "" || !c.route.startProbe(addr) {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.route.endProbe(addr)
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer c.route.endProbe(addr)
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout+c.cfg.RequestTimeout)
		defer cancel()
		if x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeHello}, callOpts{group: -1, addr: addr}); err != nil {
			c.log.Debug("lockd: a node marked down still does not answer", "node", addr, "err", err)
		} else {
			x.end()
			if x.resp.Code == wire.CodeOK {
				c.route.learnStatus(&x.resp)
			}
		}
	}()
}

// startProbe reports whether a probe of addr may start (none runs), and
// records that one does.
func (r *router) startProbe(addr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.probing == nil {
		r.probing = map[string]bool{}
	}
	if r.probing[addr] {
		return false
	}
	r.probing[addr] = true
	return true
}

func (r *router) endProbe(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.probing, addr)
}
