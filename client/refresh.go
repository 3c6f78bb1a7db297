package client

import (
	"context"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// How often the member list is asked for (see router): at most every
// memberRefreshGap while something asks for it (a member failed, a hint
// named a new node), every memberRefreshEvery in any case, and, while no
// address at all answers, with a gap that doubles up to memberRefreshMax.
const (
	memberRefreshGap   = time.Second
	memberRefreshEvery = time.Minute
	memberRefreshMax   = 30 * time.Second
)

// startRefresh starts the goroutine that keeps the member list current
// (refreshMembers), once New has learned the cluster.
func (c *Client) startRefresh() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.refreshLoop()
	}()
}

func (c *Client) refreshLoop() {
	gap := memberRefreshGap
	for {
		t := time.NewTimer(memberRefreshEvery)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-c.route.refresh:
		case <-t.C:
		}
		t.Stop()
		if c.refreshMembers() {
			gap = memberRefreshGap
		} else {
			gap = min(2*gap, memberRefreshMax)
		}
		// Requests that arrive meanwhile wait in route.refresh (one is
		// kept) for the next round.
		t = time.NewTimer(gap)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// refreshMembers asks for the member list with a Hello, and takes in the
// first answer (router.learnStatus): of the members that are up, all at
// once, and, once none answered within attemptDialWait (or all failed),
// of every other address ever known too. A silent member (a node that
// exited while its connection stays open) so costs no RequestTimeout. It
// reports whether an answer came.
func (c *Client) refreshMembers() bool {
	up, rest := c.route.refreshTargets()
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	answered := make(chan bool, len(up)+len(rest))
	ask := func(addrs []string) {
		for _, a := range addrs {
			go func() { answered <- c.hello(ctx, a) }()
		}
	}
	ask(up)
	pending := len(up)
	if pending == 0 {
		ask(rest)
		pending, rest = len(rest), nil
	}
	t := time.NewTimer(attemptDialWait)
	defer t.Stop()
	ok, late := false, false
	for pending > 0 {
		select {
		case got := <-answered:
			pending--
			if got && !ok {
				ok = true
				cancel() // the first list will do; the others give up
			}
		case <-t.C:
			late = true
		}
		if !ok && rest != nil && (pending == 0 || late) {
			c.log.Debug("lockd: no member answers; asking every address ever known for the members", "addrs", rest)
			ask(rest)
			pending, rest = pending+len(rest), nil
		}
	}
	return ok
}

// hello sends a Hello to addr alone and takes in its member list and
// masters; it reports whether addr answered OK.
func (c *Client) hello(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout+c.cfg.RequestTimeout)
	defer cancel()
	x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeHello}, callOpts{group: -1, addr: addr})
	if err != nil {
		c.log.Debug("lockd: no member list from a node", "node", addr, "err", err)
		return false
	}
	x.end()
	if x.resp.Code != wire.CodeOK || len(x.resp.Members) == 0 {
		return false
	}
	c.route.learnStatus(&x.resp)
	return true
}
