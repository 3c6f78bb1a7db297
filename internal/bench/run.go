package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/client"
)

// worker is one simulated client: op runs one operation, close ends the
// client. Both are set by a workload's set-up function.
type worker struct {
	op     func(ctx context.Context) error
	close  func()
	client *client.Client // the sessions workload opens sessions on it
}

// recorder is one worker's tally; it is merged into the Result at the end,
// so that workers never share a lock on the hot path.
type recorder struct {
	hist    Histogram
	errs    map[string]uint64
	samples map[string]string
	ops     uint64
}

func newRecorder() *recorder {
	return &recorder{errs: map[string]uint64{}, samples: map[string]string{}}
}

func (rec *recorder) fail(err error) { rec.failAs(ErrorKind(err), err) }

func (rec *recorder) failAs(k string, err error) {
	rec.errs[k]++
	if _, ok := rec.samples[k]; !ok {
		rec.samples[k] = err.Error()
	}
}

func (rec *recorder) mergeInto(r *Result) {
	r.Hist.Merge(&rec.hist)
	r.Ops += rec.ops
	for k, v := range rec.errs {
		r.Errors[k] += v
	}
	for k, v := range rec.samples {
		if r.ErrorSamples == nil {
			r.ErrorSamples = map[string]string{}
		}
		if _, ok := r.ErrorSamples[k]; !ok {
			r.ErrorSamples[k] = v
		}
	}
}

// ErrorKind names the kind of a failed operation for the error table:
// the refusal code of a node, or the client's sentinel, or "timeout".
func ErrorKind(err error) string {
	var ce *client.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code.String()
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, client.ErrLockHeld):
		return "lock-held"
	case errors.Is(err, client.ErrLockLost):
		return "lock-lost"
	case errors.Is(err, client.ErrSessionExpired):
		return "session-expired"
	case errors.Is(err, client.ErrNoMaster):
		return "no-master"
	case errors.Is(err, client.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, client.ErrClosed):
		return "closed"
	}
	return "other"
}

// setupParallel bounds how many clients connect at once, so that hundreds
// of TLS handshakes do not all time out together on a small machine.
const setupParallel = 16

// startWorkers runs setup for n workers, setupParallel at a time. Workers
// whose set-up failed are counted in r.Errors under "setup-<kind>" and
// left out; it fails only when none could be set up.
func startWorkers(ctx context.Context, n int, r *Result, setup func(ctx context.Context, w int) (*worker, error)) ([]*worker, error) {
	workers := make([]*worker, n)
	errs := make([]error, n)
	sem := make(chan struct{}, setupParallel)
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			workers[w], errs[w] = setup(ctx, w)
		}()
	}
	wg.Wait()
	var ok []*worker
	var first error
	for w := range n {
		if errs[w] != nil {
			r.Errors["setup-"+ErrorKind(errs[w])]++
			if first == nil {
				first = errs[w]
			}
			continue
		}
		ok = append(ok, workers[w])
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("bench: no client could be set up: %w", first)
	}
	return ok, nil
}

// closeWorkers ends every worker, setupParallel at a time.
func closeWorkers(workers []*worker) {
	sem := make(chan struct{}, setupParallel)
	var wg sync.WaitGroup
	for _, w := range workers {
		if w == nil || w.close == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.close()
		}()
	}
	wg.Wait()
}

// window is the measured part of a run.
type window struct {
	start, end time.Time
	ops        atomic.Uint64 // completed in the window, for the progress bar
	// perSecond counts the ops completed in each second of the window.
	perSecond []atomic.Uint64
}

func newWindow(o *Options) *window {
	now := time.Now()
	return &window{start: now.Add(o.Warmup), end: now.Add(o.Warmup + o.Duration),
		perSecond: make([]atomic.Uint64, int(o.Duration/time.Second)+1)}
}

func (w *window) count(t time.Time) {
	w.ops.Add(1)
	if i := int(t.Sub(w.start) / time.Second); i >= 0 && i < len(w.perSecond) {
		w.perSecond[i].Add(1)
	}
}

// loop runs the workers' ops until the window ends (or ctx does), and
// records each op that completed inside the window. After an error a worker
// pauses a little, as a real client would before trying again.
func loop(ctx context.Context, o *Options, workers []*worker, win *window, r *Result) {
	ctx, cancel := context.WithDeadline(ctx, win.end)
	defer cancel()
	stopProgress := startProgress(o, win, r.Workload)
	defer stopProgress()
	recs := make([]*recorder, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		rec := newRecorder()
		recs[i] = rec
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				octx, ocancel := context.WithTimeout(ctx, o.OpTimeout)
				t0 := time.Now()
				err := w.op(octx)
				t1 := time.Now()
				ocancel()
				if ctx.Err() != nil && err != nil {
					return // cut short by the end of the run
				}
				if t1.Before(win.start) || t1.After(win.end) {
					if err != nil {
						pause(ctx)
					}
					continue
				}
				if err != nil {
					rec.fail(err)
					pause(ctx)
					continue
				}
				rec.hist.Record(t1.Sub(t0))
				rec.ops++
				win.count(t1)
			}
		}()
	}
	wg.Wait()
	for _, rec := range recs {
		rec.mergeInto(r)
	}
	if r.Workload == Failover {
		r.Timeline = make([]uint64, int(o.Duration/time.Second))
		for i := range r.Timeline {
			r.Timeline[i] = win.perSecond[i].Load()
		}
	}
	r.Seconds = o.Duration.Seconds()
}

func pause(ctx context.Context) {
	t := time.NewTimer(10 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// newClient makes one simulated client, with its own connections.
func newClient(ctx context.Context, o *Options) (*client.Client, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return client.New(cctx, client.Config{Endpoints: o.Endpoints, TLS: o.TLS, Logger: o.Logger})
}

// newSessionClient makes a client and a session on it.
func newSessionClient(ctx context.Context, o *Options) (*client.Client, *client.Session, error) {
	c, err := newClient(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	s, err := c.NewSession(ctx, client.SessionOptions{TTL: o.TTL})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, s, nil
}

// closeSessionClient closes the session (releasing its locks) and the client.
func closeSessionClient(c *client.Client, s *client.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s != nil {
		_ = s.Close(ctx)
	}
	c.Close()
}

// liveSession is a worker's session, opened again when it ends, as a real
// user does after ErrSessionExpired or ErrLockLost.
type liveSession struct {
	o    *Options
	c    *client.Client
	s    *client.Session
	lost uint64 // sessions that ended under the worker
}

// get returns the session, opening a new one if it ended.
func (ls *liveSession) get(ctx context.Context) (*client.Session, error) {
	select {
	case <-ls.s.Done():
		ls.lost++
		s, err := ls.c.NewSession(ctx, client.SessionOptions{TTL: ls.o.TTL})
		if err != nil {
			return nil, err
		}
		ls.s = s
	default:
	}
	return ls.s, nil
}

// newLiveSession makes a client and a session that get reopens.
func newLiveSession(ctx context.Context, o *Options) (*liveSession, error) {
	c, s, err := newSessionClient(ctx, o)
	if err != nil {
		return nil, err
	}
	return &liveSession{o: o, c: c, s: s}, nil
}

func (ls *liveSession) close() { closeSessionClient(ls.c, ls.s) }
