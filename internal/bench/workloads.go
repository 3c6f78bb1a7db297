package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/client"
)

// lockName is the i-th lock name of a run.
func lockName(i int) string { return fmt.Sprintf("bench/%06d", i) }

// metadata is what every acquire carries, ValueSize bytes.
func metadata(o *Options) []byte {
	if o.ValueSize == 0 {
		return nil
	}
	b := make([]byte, o.ValueSize)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// pairOp returns one acquire+release on the next name of worker w. With
// at least as many names as clients, worker w owns the names w, w+C, w+2C…
// and nobody else touches them, so TryAcquire never finds them held. With
// fewer names, clients share names and wait for each other.
// onOK, when set, is told the name of every pair that succeeded.
func pairOp(o *Options, w int, ls *liveSession, onOK func(name string)) func(ctx context.Context) error {
	meta := metadata(o)
	var names []string
	shared := o.Names < o.Clients
	if shared {
		names = []string{lockName(w % o.Names)}
	} else {
		for j := w; j < o.Names; j += o.Clients {
			names = append(names, lockName(j))
		}
	}
	i := 0
	return func(ctx context.Context) error {
		name := names[i%len(names)]
		i++
		sess, err := ls.get(ctx)
		if err != nil {
			return err
		}
		var l *client.Lock
		if shared {
			l, err = sess.Acquire(ctx, name, client.LockOptions{Metadata: meta})
		} else {
			l, err = sess.TryAcquire(ctx, name, client.LockOptions{Metadata: meta})
		}
		if err != nil {
			return err
		}
		if err := l.Release(ctx); err != nil {
			return err
		}
		if onOK != nil {
			onOK(name)
		}
		return nil
	}
}

// startPairWorkers starts o.Clients workers, each with a session of its own
// that acquires and releases its own names (pairOp).
func startPairWorkers(ctx context.Context, o *Options, r *Result) ([]*worker, error) {
	return startWorkers(ctx, o.Clients, r, func(ctx context.Context, w int) (*worker, error) {
		ls, err := newLiveSession(ctx, o)
		if err != nil {
			return nil, err
		}
		return &worker{op: pairOp(o, w, ls, nil), close: ls.close}, nil
	})
}

func runUncontended(ctx context.Context, o *Options, r *Result) error {
	workers, err := startPairWorkers(ctx, o, r)
	if err != nil {
		return err
	}
	defer closeWorkers(workers)
	measureServer(o, r, func() { loop(ctx, o, workers, newWindow(o), r) })
	return nil
}

// contendedName is the one name of the contended workload.
const contendedName = "bench/contended"

// runContended has every client wait for one name, hold it for no time and
// release it. An op is one grant (a hand-over); its latency is the wait.
// The release is part of the hand-over but not of the wait: the next
// waiter's grant, applied in the slot of the release, is pushed to it.
func runContended(ctx context.Context, o *Options, r *Result) error {
	meta := metadata(o)
	var releaseErrs sync.Map // kind -> *atomic.Uint64
	workers, err := startWorkers(ctx, o.Clients, r, func(ctx context.Context, w int) (*worker, error) {
		c, s, err := newSessionClient(ctx, o)
		if err != nil {
			return nil, err
		}
		op := func(ctx context.Context) error {
			l, err := s.Acquire(ctx, contendedName, client.LockOptions{Metadata: meta})
			if err != nil {
				return err
			}
			// Release in the background of the measured wait: it is the
			// next op's first step, timed with it only if it blocks.
			rctx, cancel := context.WithTimeout(context.Background(), o.OpTimeout)
			defer cancel()
			if err := l.Release(rctx); err != nil {
				v, _ := releaseErrs.LoadOrStore("release-"+ErrorKind(err), new(atomic.Uint64))
				v.(*atomic.Uint64).Add(1)
			}
			return nil
		}
		return &worker{op: op, close: func() { closeSessionClient(c, s) }}, nil
	})
	if err != nil {
		return err
	}
	defer closeWorkers(workers)
	measureServer(o, r, func() { loop(ctx, o, workers, newWindow(o), r) })
	releaseErrs.Range(func(k, v any) bool {
		r.Errors[k.(string)] += v.(*atomic.Uint64).Load()
		return true
	})
	return nil
}

// runSessions opens Sessions sessions spread over Clients clients, each
// holding LocksPerSession locks (a session without a lock is not known to
// the cluster yet), then keeps them alive for Duration. Ops are sessions
// opened with their locks; the hold phase reports how many stayed alive,
// and the CPU time and memory the process used meanwhile.
func runSessions(ctx context.Context, o *Options, r *Result) error {
	r.Names = o.Sessions * o.LocksPerSession
	meta := metadata(o)
	var mu sync.Mutex // guards sessions
	var sessions []*client.Session
	defer func() {
		ws := make([]*worker, 0, len(sessions))
		for _, s := range sessions {
			ws = append(ws, &worker{close: func() {
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = s.Close(cctx)
			}})
		}
		closeWorkers(ws)
	}()
	workers, err := startWorkers(ctx, o.Clients, r, func(ctx context.Context, w int) (*worker, error) {
		c, err := newClient(ctx, o)
		if err != nil {
			return nil, err
		}
		return &worker{close: func() { c.Close() }, client: c}, nil
	})
	if err != nil {
		return err
	}
	defer closeWorkers(workers)

	// Open phase: every client opens sessions until Sessions are open.
	heap0 := heapInUse()
	if rss, ok := processRSS(); ok {
		r.Extra["process_rss_before_mib"] = float64(rss) / (1 << 20)
	}
	start := time.Now()
	win := &window{start: start, end: start.Add(o.HardCap)}
	stop := startProgressCount(o, win, "sessions: opening", uint64(o.Sessions))
	var next atomic.Int64
	recs := make([]*recorder, len(workers))
	var wg sync.WaitGroup
	for wi, w := range workers {
		rec := newRecorder()
		recs[wi] = rec
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Sessions {
					return
				}
				octx, cancel := context.WithTimeout(ctx, o.OpTimeout)
				t0 := time.Now()
				s, err := w.client.NewSession(octx, client.SessionOptions{TTL: o.TTL})
				if err == nil {
					mu.Lock()
					sessions = append(sessions, s)
					mu.Unlock()
					for k := range o.LocksPerSession {
						if _, err = s.TryAcquire(octx, lockName(i*o.LocksPerSession+k), client.LockOptions{Metadata: meta}); err != nil {
							break
						}
					}
				}
				cancel()
				if err != nil {
					rec.fail(err)
					continue
				}
				rec.hist.Record(time.Since(t0))
				rec.ops++
				win.ops.Add(1)
			}
		}()
	}
	wg.Wait()
	stop()
	for _, rec := range recs {
		rec.mergeInto(r)
	}
	opened := time.Since(start)
	r.Seconds = opened.Seconds()
	if ctx.Err() != nil {
		return nil
	}

	// Hold phase: nothing but keep-alives for Duration.
	cpu0, _ := processCPU()
	hold := time.NewTimer(o.Duration)
	select {
	case <-hold.C:
	case <-ctx.Done():
		hold.Stop()
	}
	cpu := (processCPUOr(cpu0) - cpu0).Seconds()
	alive := 0
	for _, s := range sessions {
		select {
		case <-s.Done():
		default:
			alive++
		}
	}
	r.Extra["sessions_opened"] = float64(len(sessions))
	r.Extra["sessions_alive_after_hold"] = float64(alive)
	r.Extra["hold_s"] = o.Duration.Seconds()
	r.Extra["hold_cpu_cores"] = cpu / o.Duration.Seconds()
	if alive > 0 {
		r.Extra["hold_cpu_us_per_session_s"] = cpu * 1e6 / o.Duration.Seconds() / float64(alive)
	}
	if rss, ok := processRSS(); ok {
		r.Extra["process_rss_mib"] = float64(rss) / (1 << 20)
	}
	heap1 := heapInUse()
	r.Extra["heap_inuse_before_mib"] = float64(heap0) / (1 << 20)
	r.Extra["heap_inuse_mib"] = float64(heap1) / (1 << 20)
	if n := len(sessions); n > 0 && heap1 > heap0 {
		r.Extra["heap_bytes_per_session"] = float64(heap1-heap0) / float64(n)
	}
	return nil
}
