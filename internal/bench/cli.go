package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/urfave/cli/v2"
)

// ClusterFlags are the flags that say where a cluster is, as lockctl
// defines them globally (bench reads them from its parent command); a
// program that runs Command alone adds them to its app.
func ClusterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "endpoints", Usage: "nodes of the cluster as host:port, comma-separated", EnvVars: []string{"LOCKD_ENDPOINTS"}},
		&cli.StringFlag{Name: "ca", Usage: "the cluster CA certificate (PEM)", EnvVars: []string{"LOCKD_CA"}},
		&cli.StringFlag{Name: "cert", Usage: "the client certificate (PEM)", EnvVars: []string{"LOCKD_CERT"}},
		&cli.StringFlag{Name: "key", Usage: "the client private key (PEM)", EnvVars: []string{"LOCKD_KEY"}},
		&cli.StringFlag{Name: "config", Usage: "a client config file (JSON: endpoints, ca, cert, key), as \"lockd dev\" writes", EnvVars: []string{"LOCKD_CONFIG"}},
	}
}

// Command returns the `bench` command of lockctl. Without --local it
// reads the cluster flags (ClusterFlags) from its parent.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure throughput, latency and failover of a cluster",
		ArgsUsage: "[uncontended|contended|sessions|failover|soak]",
		Description: `Runs a workload with many clients, each with its own connections and
session, and prints ops/s, latency percentiles and errors by kind.

With --local it starts a cluster of --nodes nodes in this process (real
pebble in a temp dir, real QUIC on 127.0.0.1, a throw-away CA); otherwise
it uses --endpoints and the TLS flags. --groups, --window and --delay take
comma-separated lists: every combination runs on a fresh local cluster,
--runs times each in rotation, and the table shows the median of each
figure. The failover and soak workloads need --local.

soak runs uncontended traffic for --duration while --burn processes (and
--burn-goroutines goroutines) spin on the CPUs, stops nothing, and reports
per group the time without a master per hour, the master changes in the
logs (spontaneous_changes) and the leases that ran out (lapses).

Examples:
   lockctl bench --local --clients 16 --names 1000 uncontended
   lockctl bench --local --clients 16 contended
   lockctl bench --local --groups 1,2,4,8,16 --window 1,64 --runs 3 uncontended
   lockctl bench --local --clients 256 --stop 3 --delay-node 2 --delay 0,30ms --window 1,64 uncontended
   lockctl bench --local --ttl 3s --duration 20s failover
   lockctl bench --local --groups 16 --clients 4 --burn 10 --duration 10m soak`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "workload", Aliases: []string{"w"}, Value: Uncontended, Usage: "workload: uncontended, contended, sessions, failover or soak (or give it as the argument)"},
			&cli.IntFlag{Name: "clients", Aliases: []string{"c"}, Value: 16, Usage: "simulated clients, each with its own connections and session"},
			&cli.IntFlag{Name: "names", Value: 1000, Usage: "lock names (uncontended, failover)"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: 10 * time.Second, Usage: "measured window per run (sessions: the hold phase)"},
			&cli.DurationFlag{Name: "warmup", Value: time.Second, Usage: "unmeasured run before the window"},
			&cli.DurationFlag{Name: "hard-cap", Usage: "bound on one run, set-up included (default duration + warm-up + 2m)"},
			&cli.IntFlag{Name: "value-size", Usage: "metadata bytes carried by every acquire"},
			&cli.DurationFlag{Name: "ttl", Usage: "session TTL (default 10s; failover 3s)"},
			&cli.IntFlag{Name: "sessions", Value: 1000, Usage: "sessions to open and keep alive (sessions)"},
			&cli.IntFlag{Name: "locks-per-session", Value: 1, Usage: "locks each session holds (sessions)"},
			&cli.DurationFlag{Name: "op-timeout", Value: 10 * time.Second, Usage: "bound on one operation"},
			&cli.IntFlag{Name: "runs", Value: 1, Usage: "runs per configuration; figures are medians"},
			&cli.IntFlag{Name: "burn", Usage: "CPU-burning processes during the run (soak)"},
			&cli.IntFlag{Name: "burn-goroutines", Usage: "CPU-burning goroutines of this process during the run (soak)"},

			&cli.BoolFlag{Name: "local", Usage: "start a cluster in this process"},
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "nodes of the local cluster"},
			&cli.StringFlag{Name: "groups", Value: "4", Usage: "Paxos groups of the local cluster (list: 1,2,4)"},
			&cli.StringFlag{Name: "window", Value: "64", Usage: "slots in flight per group, W (list: 1,64)"},
			&cli.DurationFlag{Name: "lease", Usage: "master lease of the local cluster (default: the server's, 2s)"},
			&cli.StringFlag{Name: "commit-wait", Value: "default", Usage: "the local nodes' group-commit wait: default, off, or a duration such as 100us"},
			&cli.IntFlag{Name: "delay-node", Value: 2, Usage: "node (1-based) whose links to its peers --delay slows"},
			&cli.StringFlag{Name: "delay", Value: "0", Usage: "one-way delay between --delay-node and each peer, both ways (list: 0,30ms)"},
			&cli.IntSliceFlag{Name: "stop", Usage: "node (1-based) to stop before the run (repeatable)"},
			&cli.StringFlag{Name: "stop-mode", Value: "crash", Usage: "how --stop stops a node: crash (the process stops) or isolate (cut off from its peers both ways, still running)"},

			&cli.BoolFlag{Name: "json", Usage: "print results as JSON"},
			&cli.StringFlag{Name: "out", Usage: "write the latency histograms to this CSV file"},
			&cli.BoolFlag{Name: "progress", Usage: "draw a progress bar on stderr even when it is not a terminal"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the whole process (clients and, with --local, nodes) to this file"},
			&cli.StringFlag{Name: "trace", Usage: "write an execution trace of the whole process to this file (go tool trace -pprof=sync FILE shows where goroutines wait)"},
			&cli.BoolFlag{Name: "verbose", Usage: "log the nodes' and clients' warnings to stderr"},
		},
		Action: action,
	}
}

// plan is one configuration of a sweep.
type plan struct {
	groups, window int
	delay          time.Duration
	faults         bool // nodes run on quicnet.FaultConn
	label          string
}

func action(cc *cli.Context) error {
	workload := cc.String("workload")
	if cc.NArg() > 1 {
		return cli.Exit(fmt.Sprintf("bench: give at most one workload, after the flags (got %q)", cc.Args().Slice()), 2)
	}
	if cc.NArg() == 1 {
		workload = cc.Args().First()
	}
	base := Options{
		Workload: workload, Clients: cc.Int("clients"), Names: cc.Int("names"),
		Duration: cc.Duration("duration"), Warmup: cc.Duration("warmup"), HardCap: cc.Duration("hard-cap"),
		ValueSize: cc.Int("value-size"), TTL: cc.Duration("ttl"), Sessions: cc.Int("sessions"),
		LocksPerSession: cc.Int("locks-per-session"), OpTimeout: cc.Duration("op-timeout"),
		Burn: cc.Int("burn"), BurnGoroutines: cc.Int("burn-goroutines"),
	}
	if cc.Bool("progress") || IsTerminal(os.Stderr) {
		base.Progress = cc.App.ErrWriter
		if base.Progress == nil {
			base.Progress = os.Stderr
		}
	}
	level := slog.LevelError + 1
	if cc.Bool("verbose") {
		level = slog.LevelWarn
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	base.Logger = logger

	groups, err := intList(cc.String("groups"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench: --groups: %v", err), 2)
	}
	windows, err := intList(cc.String("window"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench: --window: %v", err), 2)
	}
	delays, err := durationList(cc.String("delay"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench: --delay: %v", err), 2)
	}
	mode := cc.String("stop-mode")
	if mode != "crash" && mode != "isolate" {
		return cli.Exit(fmt.Sprintf("bench: --stop-mode %q: want crash or isolate", mode), 2)
	}
	local := cc.Bool("local")
	if !local {
		if cc.IsSet("groups") || cc.IsSet("window") || cc.IsSet("delay") || cc.IsSet("stop") {
			return cli.Exit("bench: --groups, --window, --delay and --stop shape a local cluster: add --local", 2)
		}
		cfg, err := remoteConfig(cc)
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 2)
		}
		if cfg.TLS == nil {
			tc, err := pki.LoadClientTLSConfig(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return cli.Exit(fmt.Sprintf("bench: %v", err), 2)
			}
			cfg.TLS = tc
		}
		base.TLS = cfg.TLS
		base.Endpoints = cfg.Endpoints
	}

	// The fault-injecting PacketConn hides the UDP socket's batch and GSO
	// paths from quic-go, so it costs CPU per packet; the nodes get it only
	// when a run injects faults, and then every run of the sweep gets it,
	// so that their figures compare.
	faults := cc.String("stop-mode") == "isolate" && len(cc.IntSlice("stop")) > 0
	for _, d := range delays {
		faults = faults || d > 0
	}
	var plans []plan
	for _, g := range groups {
		for _, w := range windows {
			for _, d := range delays {
				p := plan{groups: g, window: w, delay: d, faults: faults}
				var parts []string
				if local {
					parts = append(parts, fmt.Sprintf("groups=%d", g), fmt.Sprintf("W=%d", w))
					if len(delays) > 1 || d != 0 {
						parts = append(parts, fmt.Sprintf("delay(n%d)=%v", cc.Int("delay-node"), d))
					}
					for _, s := range cc.IntSlice("stop") {
						parts = append(parts, fmt.Sprintf("%s=n%d", mode, s))
					}
				}
				p.label = strings.Join(parts, " ")
				plans = append(plans, p)
			}
		}
	}

	if f := cc.String("cpuprofile"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
		}
		defer pprof.StopCPUProfile()
	}
	if f := cc.String("trace"); f != "" {
		tf, err := os.Create(f)
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
		}
		defer tf.Close()
		if err := trace.Start(tf); err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
		}
		defer trace.Stop()
	}
	ctx, stop := signal.NotifyContext(cc.Context, os.Interrupt)
	defer stop()

	runs := max(cc.Int("runs"), 1)
	all := make([][]*Result, len(plans))
	var failures []error
	for run := 0; run < runs && ctx.Err() == nil; run++ {
		// Rotate through the configurations, so that a noisy minute of the
		// machine hits all of them alike.
		for i, p := range plans {
			if ctx.Err() != nil {
				break
			}
			o := base
			var r *Result
			var err error
			if local {
				r, err = runLocal(ctx, o, p, cc, logger)
			} else {
				r, err = Run(ctx, o)
			}
			if r != nil {
				r.Label = p.label
				if local {
					r.Window = p.window
				}
				r.finish()
				all[i] = append(all[i], r)
			}
			if err != nil {
				failures = append(failures, fmt.Errorf("%s %s run %d: %w", workload, p.label, run+1, err))
				fmt.Fprintf(os.Stderr, "bench: %s %s run %d: %v\n", workload, p.label, run+1, err)
			}
		}
	}
	var results []*Result
	for _, rs := range all {
		if m := Median(rs); m != nil {
			results = append(results, m)
		}
	}
	out := cc.App.Writer
	if out == nil {
		out = os.Stdout
	}
	if anyBool(cc, "json") {
		err = WriteJSON(out, results)
	} else {
		err = WriteTable(out, results)
	}
	if err != nil {
		return err
	}
	if f := cc.String("out"); f != "" {
		if err := writeCSVFile(f, results); err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
		}
	}
	if len(failures) > 0 {
		return cli.Exit(errors.Join(failures...).Error(), 1)
	}
	return ctx.Err()
}

// runLocal starts a local cluster shaped by p and the flags, applies the
// faults, runs one workload and stops the cluster.
func runLocal(ctx context.Context, o Options, p plan, cc *cli.Context, logger *slog.Logger) (*Result, error) {
	stops := cc.IntSlice("stop")
	dnode := cc.Int("delay-node")
	nodes := cc.Int("nodes")
	for _, s := range append([]int{dnode}, stops...) {
		if s < 1 || s > nodes {
			return nil, fmt.Errorf("node %d does not exist: nodes are 1 to %d", s, nodes)
		}
	}
	wait, err := commitWait(cc.String("commit-wait"))
	if err != nil {
		return nil, err
	}
	c, err := localcluster.Start(localcluster.Options{Nodes: nodes, Groups: p.groups, Window: p.window,
		Lease: cc.Duration("lease"), Faults: p.faults, Logger: logger,
		Tune: func(cfg *server.Config) { cfg.GroupCommitWait = wait }})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.WaitForMasters(wctx); err != nil {
		return nil, err
	}
	for _, s := range stops {
		if cc.String("stop-mode") == "isolate" {
			err = c.Isolate(s - 1)
		} else {
			err = c.Stop(s - 1)
		}
		if err != nil {
			return nil, err
		}
	}
	if p.delay > 0 {
		if err := c.DelayPeer(dnode-1, p.delay); err != nil {
			return nil, err
		}
	}
	if len(stops) > 0 {
		if _, err := c.WaitForMasters(wctx); err != nil {
			return nil, err
		}
	}
	o.Cluster = c
	return Run(ctx, o)
}

func writeCSVFile(path string, results []*Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteCSV(f, results); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func intList(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%q is not a positive number", p)
		}
		out = append(out, v)
	}
	return out, nil
}

func durationList(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "0" {
			out = append(out, 0)
			continue
		}
		d, err := time.ParseDuration(p)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%q is not a duration such as 30ms", p)
		}
		out = append(out, d)
	}
	return out, nil
}

// anyBool reports whether the flag name is set on this command or any
// parent (lockctl has a global --json too).
func anyBool(cc *cli.Context, name string) bool {
	for _, c := range cc.Lineage() {
		if c != nil && c.Bool(name) {
			return true
		}
	}
	return false
}

// remoteConfig builds the cluster's endpoints and TLS files from the
// cluster flags (ClusterFlags) and --config; flags win over the file.
func remoteConfig(cc *cli.Context) (client.Config, error) {
	var cfg client.Config
	if path := cc.String("config"); path != "" {
		var err error
		if cfg, err = client.LoadConfigFile(path); err != nil {
			return cfg, err
		}
	}
	if eps := cc.StringSlice("endpoints"); len(eps) > 0 {
		cfg.Endpoints = nil
		for _, e := range eps {
			for _, p := range strings.Split(e, ",") {
				if p = strings.TrimSpace(p); p != "" {
					cfg.Endpoints = append(cfg.Endpoints, p)
				}
			}
		}
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"ca", &cfg.CAFile}, {"cert", &cfg.CertFile}, {"key", &cfg.KeyFile}} {
		if v := cc.String(f.name); v != "" {
			*f.dst = v
		}
	}
	if len(cfg.Endpoints) == 0 || cfg.CAFile == "" {
		return cfg, errors.New("give the cluster with --endpoints and --ca (with --cert and --key) or --config, or run against a local cluster with --local")
	}
	return cfg, nil
}

// commitWait parses --commit-wait into server.Config.GroupCommitWait.
func commitWait(s string) (time.Duration, error) {
	switch s {
	case "", "default":
		return 0, nil
	case "off":
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--commit-wait %q: want default, off, or a positive duration such as 100us", s)
	}
	return d, nil
}
