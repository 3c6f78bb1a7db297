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

// refreshMembers asks for the member list with a Hello, and takes it in
// (router.learnStatus): first of the members that are up, one at a time,
// then, should none answer, of every address ever known at once. It
// reports whether an answer came.
func (c *Client) refreshMembers() bool {
	up, rest := c.route.refreshTargets()
	for i, a := range up {
		if i == 2 {
			rest = append(rest, up[i:]...)
			break
		}
		if c.hello(c.ctx, a) {
			return true
		}
		if c.ctx.Err() != nil {
			return false
		}
	}
	if len(rest) == 0 {
		return false
	}
	c.log.Debug("lockd: no member answers; asking every address ever known for the members", "addrs", rest)
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	answered := make(chan bool, len(rest))
	for _, a := range rest {
		go func() { answered <- c.hello(ctx, a) }()
	}
	ok := false
	for range rest {
		if <-answered && !ok {
			ok = true
			cancel() // the first list will do; the others give up
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
