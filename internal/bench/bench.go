// Package bench is the engine of `lockctl bench`: workloads that drive a
// lockd cluster through the public client, as real users do (each simulated
// client has its own client.Client and session), and record every
// operation's latency in a log-bucketed histogram.
//
// Workloads:
//
//   - uncontended: C clients acquire and release locks on K names, no two
//     clients on one name when K >= C. One op is an acquire+release pair.
//   - contended: C clients take turns on one name. One op is a hand-over
//     (a grant); its latency is the wait from asking to the grant.
//   - sessions: S sessions over C clients, each holding L locks, are opened
//     and then kept alive; ops are sessions opened, and the hold phase
//     reports how many stayed alive and what keeping them alive cost.
//   - failover: uncontended load while the master of group 0 is stopped
//     like a SIGKILL; reports when the dead master's groups serve again and
//     when a lock whose holder died with the node is granted to a waiter.
//
// A run's measured window is Duration after Warmup; the whole run, set-up
// included, is bounded by HardCap.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
)

// Workload names.
const (
	Uncontended = "uncontended"
	Contended   = "contended"
	Sessions    = "sessions"
	Failover    = "failover"
	// Soak: uncontended traffic on a local cluster while CPU burners load
	// the machine; it reports the groups' time without a master and the
	// master changes nothing caused.
	Soak = "soak"
)

// Workloads lists the workload names.
var Workloads = []string{Uncontended, Contended, Sessions, Failover, Soak}

// Options shape one run. Zero values take the defaults beside them.
type Options struct {
	Workload string
	// Clients is the number of simulated clients, each with its own
	// client.Client (connections) and session (default 16).
	Clients int
	// Names is the number of lock names of uncontended and failover
	// (default 1000).
	Names int
	// Duration is the measured window (default 10s); Warmup runs the
	// workload unmeasured before it (default 1s).
	Duration time.Duration
	Warmup   time.Duration
	// HardCap bounds the whole run, set-up included (default Duration +
	// Warmup + 2m).
	HardCap time.Duration
	// ValueSize is the metadata size of every acquire, in bytes.
	ValueSize int
	// TTL is the sessions' TTL (default 10s; failover: 3s).
	TTL time.Duration
	// Sessions and LocksPerSession shape the sessions workload (default
	// 1000 sessions holding one lock each).
	Sessions        int
	LocksPerSession int
	// OpTimeout bounds one operation (default 10s).
	OpTimeout time.Duration
	// Burn and BurnGoroutines are the CPU-burning processes and goroutines
	// of the soak workload.
	Burn           int
	BurnGoroutines int

	// Endpoints and TLS say where the cluster is. With Cluster set they
	// are taken from it.
	Endpoints []string
	TLS       *tls.Config
	// Cluster is the in-process cluster, when the run started one; the
	// failover workload needs it (it stops a node).
	Cluster *localcluster.Cluster

	// Progress, when set, receives a progress bar, redrawn in place.
	Progress io.Writer
	// Logger receives the clients' logs (default: discarded).
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.Workload == "" {
		o.Workload = Uncontended
	}
	known := false
	for _, w := range Workloads {
		known = known || w == o.Workload
	}
	if !known {
		return fmt.Errorf("bench: unknown workload %q; want one of %v", o.Workload, Workloads)
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&o.Clients, 16)
	def(&o.Names, 1000)
	def(&o.Sessions, 1000)
	def(&o.LocksPerSession, 1)
	defd(&o.Duration, 10*time.Second)
	defd(&o.Warmup, time.Second)
	defd(&o.OpTimeout, 10*time.Second)
	if o.Workload == Failover {
		defd(&o.TTL, 3*time.Second)
	}
	defd(&o.TTL, 10*time.Second)
	defd(&o.HardCap, o.Duration+o.Warmup+2*time.Minute)
	switch {
	case o.Clients < 1:
		return fmt.Errorf("bench: clients is %d, want 1 or more", o.Clients)
	case o.Names < 1:
		return fmt.Errorf("bench: names is %d, want 1 or more", o.Names)
	case o.Duration < 0 || o.Warmup < 0:
		return fmt.Errorf("bench: duration %v and warm-up %v must not be negative", o.Duration, o.Warmup)
	case o.ValueSize < 0:
		return fmt.Errorf("bench: value size %d is negative", o.ValueSize)
	case o.Sessions < 1 || o.LocksPerSession < 1:
		return fmt.Errorf("bench: sessions %d and locks per session %d must be 1 or more", o.Sessions, o.LocksPerSession)
	}
	if o.Cluster != nil {
		o.Endpoints = o.Cluster.Endpoints()
		tc, err := o.Cluster.ClientTLS()
		if err != nil {
			return err
		}
		o.TLS = tc
	}
	if len(o.Endpoints) == 0 || o.TLS == nil {
		return errors.New("bench: no cluster: give endpoints and TLS, or start a local cluster (--local)")
	}
	if o.Workload == Failover && o.Cluster == nil {
		return errors.New("bench: the failover workload stops a node, so it runs only against a local cluster (--local)")
	}
	if o.Workload == Soak && o.Cluster == nil {
		return errors.New("bench: the soak workload follows a local cluster's masters, so it runs only with --local")
	}
	if o.Burn < 0 || o.BurnGoroutines < 0 {
		return fmt.Errorf("bench: burners %d and %d must not be negative", o.Burn, o.BurnGoroutines)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Run runs one workload and returns its result. The result carries what
// was measured even when err is not nil, as far as it got.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.HardCap)
	defer cancel()
	r := &Result{Workload: o.Workload, Clients: o.Clients, Errors: map[string]uint64{}, Extra: map[string]float64{}}
	if o.Cluster != nil {
		r.Groups = o.Cluster.Groups()
	}
	var err error
	switch o.Workload {
	case Uncontended:
		r.Names = o.Names
		err = runUncontended(ctx, &o, r)
	case Contended:
		r.Names = 1
		err = runContended(ctx, &o, r)
	case Sessions:
		err = runSessions(ctx, &o, r)
	case Failover:
		r.Names = o.Names
		err = runFailover(ctx, &o, r)
	case Soak:
		r.Names = o.Names
		err = runSoak(ctx, &o, r)
	}
	if la, ok := loadAverage(); ok {
		r.Extra["loadavg_1m_at_end"] = la
	}
	r.finish()
	if err == nil && ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("bench: the run hit its hard cap of %v (--hard-cap): %w", o.HardCap, ctx.Err())
		} else {
			err = fmt.Errorf("bench: the run was interrupted before it finished: %w", ctx.Err())
		}
	}
	return r, err
}
