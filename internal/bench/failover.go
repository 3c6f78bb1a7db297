package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/wire"
)

// failoverHeldName returns the k-th lock name of group g (k from 0).
func failoverHeldName(g uint32, groups, k int) string {
	for i := 0; ; i++ {
		n := fmt.Sprintf("bench/held-%d", i)
		if wire.GroupOf(n, groups) == g {
			if k == 0 {
				return n
			}
			k--
		}
	}
}

// runFailover runs uncontended load and, a quarter into the measured
// window, stops the master of group 0 the way SIGKILL would. A holder
// connected only to that node holds a lock of group 0 with TTL, and a
// waiter (an ordinary client) queues for it. The waiter and the load keep
// their sessions with at least the client's default TTL (10s), so that
// they can outlive the failover. It reports:
//
//   - served_again_s: from the stop until every group the dead node
//     mastered has a serving master again (the nodes' view);
//   - first_ok_s: until the load's clients completed an acquire+release in
//     every such group (the clients' view, retries and backoff included);
//   - waiter_granted_s: until the waiter got the dead holder's lock, which
//     must be at least the TTL after the holder's last answered keep-alive
//     (granted_before_ttl is 1 if it was not) and is wanted within TTL+1s.
func runFailover(ctx context.Context, o *Options, r *Result) error {
	c := o.Cluster
	groups := c.Groups()
	if need := o.TTL + 6*time.Second; o.Duration < need {
		return fmt.Errorf("bench: failover needs a duration of at least TTL + 6s (%v) to see the waiter granted; got %v", need, o.Duration)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := c.WaitForMasters(wctx)
	wcancel()
	if err != nil {
		return err
	}

	// firstOK[g] is the first time, in ns since crash, a load op on
	// group g succeeded after the crash; 0 until then.
	// own tallies the waiters' errors; the load's loop merges its own
	// tallies into r when the window ends, so own is merged after it.
	own := newRecorder()
	defer own.mergeInto(r)
	var crashAt atomic.Int64 // unix ns; 0 before the crash
	firstOK := make([]atomic.Int64, groups)
	lives := make([]*liveSession, o.Clients)
	defer func() {
		var lost uint64
		for _, ls := range lives {
			if ls != nil {
				lost += ls.lost
			}
		}
		r.Extra["load_sessions_lost"] = float64(lost)
	}()
	workers, err := startWorkers(ctx, o.Clients, r, func(ctx context.Context, w int) (*worker, error) {
		lo := *o
		lo.TTL = max(o.TTL, client.DefaultTTL)
		ls, err := newLiveSession(ctx, &lo)
		if err != nil {
			return nil, err
		}
		lives[w] = ls
		op := pairOp(o, w, ls, func(name string) {
			if t0 := crashAt.Load(); t0 != 0 {
				g := wire.GroupOf(name, groups)
				firstOK[g].CompareAndSwap(0, max(time.Now().UnixNano()-t0, 1))
			}
		})
		return &worker{op: op, close: ls.close}, nil
	})
	if err != nil {
		return err
	}
	defer closeWorkers(workers)

	win := newWindow(o)
	var loopDone sync.WaitGroup
	loopDone.Add(1)
	go func() {
		defer loopDone.Done()
		loop(ctx, o, workers, win, r)
	}()
	defer loopDone.Wait()

	// Set the scene a second before the crash.
	crashTime := win.start.Add(o.Duration / 4)
	r.Extra["crash_at_window_s"] = crashTime.Sub(win.start).Seconds()
	if err := sleepUntil(ctx, crashTime.Add(-time.Second)); err != nil {
		return err
	}
	masters := c.Masters(ctx)
	victim := masters[0]
	if victim < 0 {
		return errors.New("bench: group 0 has no master right before the crash")
	}
	held := failoverHeldName(0, groups, 0)
	held2 := failoverHeldName(0, groups, 1) // the raw waiter's
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
	defer hcancel()
	holder, err := dialHolder(hctx, c.Node(victim).Addr, o.TLS, 0)
	if err != nil {
		return err
	}
	defer holder.close()
	if err := holder.hold(hctx, held, o.TTL); err != nil {
		return err
	}
	if _, err := holder.command(hctx, &wire.Msg{Type: wire.TypeAcquire, Session: holder.session, Name: held2}); err != nil {
		return err
	}
	// The waiter (and the load) keep their sessions with at least the
	// client's default TTL, so that they outlive the failover itself: the
	// figure is about the holder's TTL.
	wo := *o
	wo.TTL = max(o.TTL, client.DefaultTTL)
	wc, ws, err := newSessionClient(ctx, &wo)
	if err != nil {
		return fmt.Errorf("bench: waiter: %w", err)
	}
	defer closeSessionClient(wc, ws)
	granted := make(chan time.Time, 1)
	type failure struct {
		err error
		at  time.Time
	}
	waitErr := make(chan failure, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, o.TTL+time.Minute)
		defer cancel()
		l, err := ws.Acquire(actx, held, client.LockOptions{})
		if err != nil {
			waitErr <- failure{err, time.Now()}
			return
		}
		granted <- time.Now()
		_ = l
	}()
	if err := waitQueued(ctx, wc, held); err != nil {
		return err
	}
	// A second waiter speaks the wire protocol and fails over the way a
	// client should (to the new master, the same command id), so the
	// cluster's side of the hand-over is measured even if the client's
	// failover is slow.
	rw, err := dialHolder(hctx, c.Node(victim).Addr, o.TLS, 0)
	if err != nil {
		return fmt.Errorf("bench: raw waiter: %w", err)
	}
	defer rw.close()
	if err := rw.open(hctx, wo.TTL); err != nil {
		return fmt.Errorf("bench: raw waiter: %w", err)
	}
	rwSeq, err := rw.queue(hctx, held2, 0)
	if err != nil {
		return fmt.Errorf("bench: raw waiter: %w", err)
	}

	// The crash: the holder's last keep-alive is answered, then its node
	// stops and the holder dies with it.
	if err := sleepUntil(ctx, crashTime); err != nil {
		return err
	}
	kaSent := time.Now()
	if err := holder.keepAlive(hctx); err != nil {
		return err
	}
	kaAnswered := time.Now()
	t0 := time.Now()
	crashAt.Store(t0.UnixNano())
	if err := c.Stop(victim); err != nil {
		return err
	}
	holder.close()
	stopped := time.Since(t0)
	r.Extra["victim_node"] = float64(c.Node(victim).ID)
	r.Extra["stop_took_s"] = stopped.Seconds()
	r.Extra["ttl_s"] = o.TTL.Seconds()

	var dead []int
	for g, m := range masters {
		if m == victim {
			dead = append(dead, g)
		}
	}
	r.Extra["groups_of_dead_master"] = float64(len(dead))
	// Node view: poll until every dead group has a serving master.
	for {
		ms := c.Masters(ctx)
		all := true
		for _, g := range dead {
			all = all && ms[g] >= 0
		}
		if all {
			r.Extra["served_again_s"] = time.Since(t0).Seconds()
			break
		}
		if ctx.Err() != nil || time.Since(t0) > 30*time.Second {
			return fmt.Errorf("bench: the dead master's groups %v were not served again within %v", dead, time.Since(t0).Round(time.Millisecond))
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The raw waiter moves to the new master and re-sends its acquire.
	rawGranted := make(chan time.Time, 1)
	rawErr := make(chan error, 1)
	go func() {
		gctx, cancel := context.WithDeadline(ctx, t0.Add(o.TTL+30*time.Second))
		defer cancel()
		m := c.Masters(gctx)[0]
		if m < 0 {
			rawErr <- errors.New("group 0 has no master")
			return
		}
		if err := rw.redial(gctx, c.Node(m).Addr, o.TLS); err != nil {
			rawErr <- err
			return
		}
		if _, err := rw.queue(gctx, held2, rwSeq); err != nil {
			rawErr <- err
			return
		}
		tg, err := rw.awaitGrant(gctx)
		if err != nil {
			rawErr <- err
			return
		}
		rawGranted <- tg
	}()
	select {
	case tg := <-rawGranted:
		r.Extra["raw_waiter_granted_s"] = tg.Sub(t0).Seconds()
		before := 0.0
		if tg.Sub(kaSent) < o.TTL {
			before = 1
		}
		r.Extra["raw_granted_before_ttl"] = before
	case err := <-rawErr:
		own.failAs("raw-waiter-failed", err)
	}

	// The client waiter's grant.
	select {
	case tg := <-granted:
		r.Extra["waiter_granted_s"] = tg.Sub(t0).Seconds()
		r.Extra["waiter_granted_after_last_keepalive_s"] = tg.Sub(kaAnswered).Seconds()
		before := 0.0
		if tg.Sub(kaSent) < o.TTL {
			before = 1
		}
		r.Extra["granted_before_ttl"] = before
	case f := <-waitErr:
		err := f.err
		// The waiter's own session ended (its keep-alives went unanswered
		// through the failover): a finding, not a failure of the run.
		own.failAs("waiter-"+ErrorKind(err), err)
		r.Extra["waiter_failed_s"] = f.at.Sub(t0).Seconds()
	case <-ctx.Done():
		return ctx.Err()
	}

	// Client view: wait for the load to succeed in every dead group, or the
	// end of the window.
	for {
		worst := 0.0
		all := true
		for _, g := range dead {
			v := firstOK[g].Load()
			all = all && v != 0
			worst = max(worst, time.Duration(v).Seconds())
		}
		if all {
			r.Extra["first_ok_s"] = worst
			break
		}
		if time.Now().After(win.end) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitQueued waits until name has a waiter.
func waitQueued(ctx context.Context, c *client.Client, name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		info, err := c.LockStatus(ctx, name)
		if err == nil && info.Held && info.Waiters > 0 {
			return nil
		}
		if err := sleepUntil(ctx, time.Now().Add(10*time.Millisecond)); err != nil {
			return err
		}
	}
	return fmt.Errorf("bench: the waiter did not queue for %s within 5s", name)
}
