//go:build unix

package nemesis

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/wire"
)

// workerEnv carries a worker's configuration (JSON) to a worker process:
// the test binary started again, which runs workerMain instead of tests.
const workerEnv = "LOCKD_NEMESIS_WORKER"

type workerConfig struct {
	ID         int           `json:"id"`
	Seed       uint64        `json:"seed"`
	Endpoints  []string      `json:"endpoints"`
	CA         string        `json:"ca"`
	Cert       string        `json:"cert"`
	Key        string        `json:"key"`
	Groups     int           `json:"groups"`
	Names      []string      `json:"names"`
	TTL        time.Duration `json:"ttl"`
	LostMargin time.Duration `json:"lost_margin"`
	OpTimeout  time.Duration `json:"op_timeout"`
	// Planted faults for the checker tests.
	StaleAfterGrant bool `json:"stale_after_grant,omitempty"` // write the name's previous token right after a new one
	RenewAfterLost  bool `json:"renew_after_lost,omitempty"`  // report a renew as ok after Lost closed
}

type worker struct {
	cfg  workerConfig
	rng  *rand.Rand
	cl   *client.Client
	out  *json.Encoder
	outM sync.Mutex

	sess *client.Session
	sids map[uint32]uint64
	held map[string]*client.Lock
	prev map[string]uint64 // name -> the worker's last token of it
	old  []*client.Lock    // released or lost locks, for stale writes
}

func now() int64 { return time.Now().UnixNano() }

func (w *worker) emit(r Rec) {
	r.W = w.cfg.ID
	w.outM.Lock()
	defer w.outM.Unlock()
	w.out.Encode(r) // one write per line: the pipe keeps lines whole
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// workerMain runs random lock traffic until told "quiesce" on stdin, then
// reports its locks, answers "probe" and "final", and exits on "exit" or
// when stdin closes.
func workerMain(raw string) int {
	var cfg workerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	w := &worker{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.ID))), out: json.NewEncoder(os.Stdout),
		held: map[string]*client.Lock{}, prev: map[string]uint64{}}
	ccfg := client.Config{Endpoints: cfg.Endpoints, CAFile: cfg.CA, CertFile: cfg.Cert, KeyFile: cfg.Key,
		DialTimeout: 2 * time.Second, RequestTimeout: 3 * time.Second,
		// Debug: the client's retries, redirects, failed dials and lost
		// connections go to worker-N.log, to tell what a stuck client did.
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	var err error
	for i := 0; i < 60; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		w.cl, err = client.New(ctx, ccfg)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	defer w.cl.Close()

	cmds := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds)
	}()
	w.emit(Rec{T: "ready"})
	quiesced := false
	for !quiesced {
		select {
		case c, ok := <-cmds:
			if !ok {
				return 0
			}
			if c == "quiesce" {
				quiesced = true
				continue
			}
		default:
		}
		w.step()
	}
	w.report("held")
	for c := range cmds {
		switch c {
		case "probe":
			w.probe()
		case "final":
			w.final()
		case "exit":
			return 0
		}
	}
	return 0
}

func (w *worker) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), w.cfg.OpTimeout)
}

// session returns a live session that is open in every group of the names
// (so that every operation knows its session ID), or nil.
func (w *worker) session() *client.Session {
	if w.sess != nil && !closed(w.sess.Done()) {
		return w.sess
	}
	if w.sess != nil {
		w.emit(Rec{T: "lost", Call: now(), Err: fmt.Sprint(w.sess.Err())})
		for n, l := range w.held {
			w.old = append(w.old, l)
			delete(w.held, n)
		}
		w.sess = nil
	}
	ctx, cancel := w.ctx()
	defer cancel()
	s, err := w.cl.NewSession(ctx, client.SessionOptions{TTL: w.cfg.TTL, LostMargin: w.cfg.LostMargin})
	if err != nil {
		time.Sleep(100 * time.Millisecond)
		return nil
	}
	sids := map[uint32]uint64{}
	for _, name := range w.cfg.Names {
		g := wire.GroupOf(name, w.cfg.Groups)
		if _, ok := sids[g]; ok {
			continue
		}
		// A private name in the same group opens the session there.
		var priv string
		for i := 0; ; i++ {
			priv = fmt.Sprintf("w%d-%d", w.cfg.ID, i)
			if wire.GroupOf(priv, w.cfg.Groups) == g {
				break
			}
		}
		l, err := s.TryAcquire(ctx, priv, client.LockOptions{})
		if err != nil {
			s.Close(ctx)
			time.Sleep(100 * time.Millisecond)
			return nil
		}
		sids[g] = l.SessionID()
		l.Release(ctx)
	}
	w.sess, w.sids = s, sids
	return s
}

func (w *worker) sid(name string) uint64 { return w.sids[wire.GroupOf(name, w.cfg.Groups)] }

func classify(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, client.ErrLockHeld):
		return "held"
	case errors.Is(err, client.ErrLockLost):
		return "lost"
	}
	return "unknown"
}

func (w *worker) step() {
	s := w.session()
	if s == nil {
		return
	}
	// Forget locks that are lost.
	for n, l := range w.held {
		if closed(l.Lost()) {
			w.old = append(w.old, l)
			delete(w.held, n)
		}
	}
	var mine []*client.Lock
	for _, n := range w.cfg.Names {
		if l := w.held[n]; l != nil {
			mine = append(mine, l)
		}
	}
	r := w.rng.Float64()
	switch {
	case len(mine) > 0 && r < 0.35:
		l := mine[w.rng.IntN(len(mine))]
		for range 1 + w.rng.IntN(3) {
			w.write(l, false)
			time.Sleep(time.Duration(w.rng.IntN(20)) * time.Millisecond)
		}
	case len(mine) > 0 && r < 0.45:
		w.renew(mine[w.rng.IntN(len(mine))])
	case r < 0.52:
		w.validate(mine)
	case len(mine) > 0 && r < 0.70:
		w.release(mine[w.rng.IntN(len(mine))])
	case r < 0.73:
		w.watch(w.cfg.Names[w.rng.IntN(len(w.cfg.Names))])
	case r < 0.76 && len(w.old) > 0:
		// A stale write, as a paused or careless old holder would make:
		// the resource must refuse it once a newer token wrote.
		w.write(w.old[w.rng.IntN(len(w.old))], true)
	default:
		name := w.cfg.Names[w.rng.IntN(len(w.cfg.Names))]
		if w.held[name] != nil || len(mine) >= 2 {
			return
		}
		ops := []string{"acquire", "try", "shared", "tryshared"}
		w.acquire(s, name, ops[w.rng.IntN(len(ops))])
	}
}

func (w *worker) acquire(s *client.Session, name, op string) {
	ctx, cancel := w.ctx()
	defer cancel()
	rec := Rec{T: "op", Op: op, Name: name, Sid: w.sid(name), Shared: op == "shared" || op == "tryshared"}
	rec.LostBefore = closed(s.Done())
	rec.Call = now()
	opts := client.LockOptions{Shared: rec.Shared}
	var l *client.Lock
	var err error
	if op == "try" || op == "tryshared" {
		l, err = s.TryAcquire(ctx, name, opts)
	} else {
		l, err = s.Acquire(ctx, name, opts)
	}
	rec.Ret = now()
	rec.Res = classify(err)
	if err != nil {
		rec.Err = err.Error()
		if rec.Res == "unknown" || rec.Res == "lost" {
			rec.Res, rec.Ret = "unknown", Infinity
		}
		w.emit(rec)
		return
	}
	rec.Token = l.Token()
	if l.SessionID() != rec.Sid {
		rec.Err = fmt.Sprintf("session id %d, want %d", l.SessionID(), rec.Sid)
		rec.Sid = l.SessionID()
	}
	w.emit(rec)
	w.held[name] = l
	sharedLocks.Store(l, rec.Shared)
	if w.cfg.StaleAfterGrant {
		if p := w.prev[name]; p != 0 && p < l.Token() {
			w.write(l, false)
			w.emit(Rec{T: "write", Name: name, Token: p, Shared: rec.Shared, Sid: rec.Sid, Call: now(), Stale: true})
		}
	}
	w.prev[name] = l.Token()
}

// write writes to the fenced resource with l's token. The client timestamp
// is taken before the check that the lock is still held, so the worker
// believed it held the lock at some moment at or after it.
func (w *worker) write(l *client.Lock, stale bool) {
	cts := now()
	if !stale && closed(l.Lost()) {
		return
	}
	w.emit(Rec{T: "write", Name: l.Name(), Token: l.Token(), Sid: l.SessionID(), Call: cts, Stale: stale, Shared: w.isShared(l)})
}

var sharedLocks sync.Map // *client.Lock -> bool

func (w *worker) isShared(l *client.Lock) bool {
	v, _ := sharedLocks.Load(l)
	b, _ := v.(bool)
	return b
}

func (w *worker) renew(l *client.Lock) {
	ctx, cancel := w.ctx()
	defer cancel()
	rec := Rec{T: "op", Op: "renew", Name: l.Name(), Sid: l.SessionID(), Token: l.Token()}
	rec.LostBefore = closed(l.Lost())
	rec.Call = now()
	err := l.Renew(ctx)
	rec.Ret = now()
	rec.Res = classify(err)
	if err != nil {
		rec.Err = err.Error()
	}
	w.emit(rec)
}

func (w *worker) validate(mine []*client.Lock) {
	name := w.cfg.Names[w.rng.IntN(len(w.cfg.Names))]
	token := w.prev[name]
	if len(mine) > 0 && w.rng.IntN(2) == 0 {
		name, token = mine[0].Name(), mine[0].Token()
	}
	if token == 0 {
		token = 1 + uint64(w.rng.IntN(50))
	}
	ctx, cancel := w.ctx()
	defer cancel()
	rec := Rec{T: "op", Op: "validate", Name: name, Token: token, Call: now()}
	ok, err := w.cl.Validate(ctx, name, token)
	rec.Ret = now()
	switch {
	case err != nil:
		rec.Res, rec.Err = "unknown", err.Error()
	case ok:
		rec.Res = "true"
	default:
		rec.Res = "false"
	}
	w.emit(rec)
}

func (w *worker) release(l *client.Lock) {
	ctx, cancel := w.ctx()
	defer cancel()
	rec := Rec{T: "op", Op: "release", Name: l.Name(), Sid: l.SessionID(), Token: l.Token(), Call: now()}
	wasLost := closed(l.Lost())
	err := l.Release(ctx)
	rec.Ret = now()
	rec.Res = classify(err)
	if err != nil {
		rec.Err = err.Error()
		if rec.Res != "lost" || !wasLost {
			// Lost closes as the release starts; a release that then
			// fails may still have been applied.
			rec.Res, rec.Ret = "unknown", Infinity
		}
	}
	if wasLost && rec.Res == "lost" {
		// The client answered from its own state, without asking: nothing
		// for the model.
		rec.Res, rec.Ret = "unknown", Infinity
	}
	w.emit(rec)
	delete(w.held, l.Name())
	w.old = append(w.old, l)
	if w.cfg.RenewAfterLost {
		w.emit(Rec{T: "op", Op: "renew", Name: l.Name(), Sid: l.SessionID(), Token: l.Token(), LostBefore: true, Res: "ok", Call: now(), Ret: now()})
	}
}

// watch watches name briefly and reports the granted tokens it saw.
func (w *worker) watch(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond+time.Duration(w.rng.IntN(700))*time.Millisecond)
	defer cancel()
	ch, err := w.cl.Watch(ctx, name)
	if err != nil {
		return
	}
	var toks []uint64
	for ev := range ch {
		if ev.Kind == client.EventGranted {
			toks = append(toks, ev.Token)
		}
	}
	w.emit(Rec{T: "watch", Name: name, Toks: toks})
}

// report lists the locks the worker holds.
func (w *worker) report(t string) {
	for _, n := range w.cfg.Names {
		l := w.held[n]
		if l == nil || closed(l.Lost()) {
			continue
		}
		w.emit(Rec{T: t, Name: n, Sid: l.SessionID(), Token: l.Token(), Shared: w.isShared(l)})
	}
	w.emit(Rec{T: t + "-done"})
}

// probe retries a linearizable read of every name until all succeed, and
// reports how long that took.
func (w *worker) probe() {
	start := time.Now()
	var last error
	for i := 0; i < 1000; i++ {
		ok := true
		for _, n := range w.cfg.Names {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := w.cl.LockStatus(ctx, n)
			cancel()
			if err != nil {
				ok, last = false, err
				break
			}
		}
		if ok {
			w.emit(Rec{T: "probe", Dur: int64(time.Since(start))})
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.emit(Rec{T: "probe", Dur: -1, Err: fmt.Sprint(last)})
}

// final renews every lock it reported: Res ok, or lost with the reason;
// LostBefore when the client had given the lock up on its own before.
func (w *worker) final() {
	for _, n := range w.cfg.Names {
		l := w.held[n]
		if l == nil {
			continue
		}
		rec := Rec{T: "final", Name: n, Sid: l.SessionID(), Token: l.Token(), LostBefore: closed(l.Lost())}
		var err error
		for i := 0; i < 5; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			err = l.Renew(ctx)
			cancel()
			if err == nil || errors.Is(err, client.ErrLockLost) {
				break
			}
		}
		rec.Res = classify(err)
		if err != nil {
			rec.Err = err.Error()
		}
		w.emit(rec)
	}
	w.emit(Rec{T: "final-done"})
}
