//go:build unix

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/pki"
)

// The shape of the measurement is client/flood_bench_test.go's
// BenchmarkFloodIsolation, so that the two benchmarks' figures compare:
// floodRounds quiet and flooded phases alternate on one cluster (the
// machine's load drifts over tens of seconds; alternating lets both
// conditions see the same drift), and the flooder runs floodDepth
// acquire+release loops on each of floodSessions sessions, each loop on
// its own floodNames names.
const (
	floodRounds   = 12
	floodSessions = 64
	floodDepth    = 8
	floodNames    = 4
)

// floodChildLimit bounds a flooder child's life: a hang guard for a child
// whose parent died without stopping it (the parent stops it with SIGTERM
// after a phase, and SIGKILLs it when the benchmark ends).
const floodChildLimit = 30 * time.Minute

// BenchmarkFloodIsolationProcesses is BenchmarkFloodIsolation (package
// client) with real processes: three `lockd run` nodes, the victim (one
// identity doing acquire+release one at a time) in the benchmark's
// process, and the flooder (another identity: floodSessions sessions,
// floodSessions*floodDepth acquire+release loops, within its per-identity
// caps) in a child process, the test binary run as the "flood" helper.
// Quiet and flooded phases alternate floodRounds times; each measures the
// victim for b.N/floodRounds ops, and a flooded phase has a flooder child
// of its own, started before it and stopped (SIGTERM) after it, so that a
// quiet phase has no flooder at all.
//
// Why processes: in the in-process benchmark the nodes, the flooder's 512
// goroutines and the victim share one Go scheduler (and its GC) on the
// machine's cores, so the victim also waits behind the flood's goroutines
// in its own process. A deployment has neither; here the only thing the
// victim shares with the flood is the nodes and the machine, which is the
// isolation the per-identity caps are meant to give.
//
// It reports the victim's p50 and p99 in both conditions and their p99
// ratio, under the in-process benchmark's metric names; flood-ops/s, the
// flooder's requests (an acquire+release is two) per second of its
// flooding, as the child counted them; flood-refused, its refused
// requests; and quiet-syncs/s and flood-syncs/s, the nodes' synced writes
// (lockd_store_sync_seconds_count from each node's admin /metrics, summed)
// per second of the victim's measurement in each condition.
//
//	go test ./internal/e2e -run '^$' -bench FloodIsolationProcesses -benchtime 480x
func BenchmarkFloodIsolationProcesses(b *testing.B) {
	if testing.Short() {
		b.Skip("starts lockd processes; skipped with -short")
	}
	// A hang guard for the whole benchmark; every wait below ends with it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	// The default lease (2s) and caps, as the in-process benchmark has.
	c := startCluster(b, 4, 2*time.Second)
	c.waitServing(20 * time.Second)
	victimTLS := issueIdentity(b, c, "victim")
	issueIdentity(b, c, "flooder")
	floodConfig := filepath.Join(c.dir, "flooder.json")
	if err := writeClientConfig(floodConfig, c, "flooder"); err != nil {
		b.Fatal(err)
	}

	victim, err := client.New(ctx, client.Config{Endpoints: c.addrs, TLS: victimTLS,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer victim.Close()
	vs, err := victim.NewSession(ctx, client.SessionOptions{TTL: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	// measure times n acquire+release pairs into pairs, and their
	// acquires alone into acquires (issue 10 names the acquire's p99).
	measure := func(n int, pairs, acquires *[]time.Duration) {
		for j := 0; j < n; j++ {
			t0 := time.Now()
			l, err := vs.Acquire(ctx, fmt.Sprintf("victim-%d", j%8), client.LockOptions{})
			if err != nil {
				b.Fatalf("victim acquire: %v", err)
			}
			*acquires = append(*acquires, time.Since(t0))
			if err := l.Release(ctx); err != nil {
				b.Fatalf("victim release: %v", err)
			}
			*pairs = append(*pairs, time.Since(t0))
		}
	}
	syncs := func() float64 {
		n, err := nodeSyncs(c.admins)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	env := []string{helperRoleEnv + "=flood", helperConfig + "=" + floodConfig}
	var floodOps, floodRefused int64
	var floodSecs float64
	var children int
	var childSetUp, childStop time.Duration // for the log: what a phase costs besides its measurement
	runFlood := func(name string, during func()) {
		p := startProc(b, name, self, env)
		var ready, stopping time.Time
		err := floodChild(ctx, p, func() {
			ready = time.Now()
			during()
			stopping = time.Now()
		}, &floodOps, &floodRefused, &floodSecs)
		if err != nil {
			b.Fatalf("%v\nflooder stderr (%s):\n%s", err,
				filepath.Join(logRoot(b), name, "stderr"), tail(p.err.String(), 20))
		}
		children++
		childSetUp += ready.Sub(p.start)
		childStop += p.end.Sub(stopping)
		// As the in-process benchmark settles after a flood: the nodes
		// finish what the flood left (its sessions' closes) before the
		// quiet phase.
		time.Sleep(200 * time.Millisecond)
	}

	var warm, warmAcq []time.Duration
	measure(16, &warm, &warmAcq) // connect to every group's master
	runFlood("flooder-warm", func() { time.Sleep(time.Second) })
	floodOps, floodRefused, floodSecs = 0, 0, 0

	var quiet, flood, quietAcq, floodAcq []time.Duration
	var quietWall, floodWall time.Duration
	var quietSyncs, floodSyncs float64
	per := max(1, b.N/floodRounds)
	b.ResetTimer()
	for r := 0; r < floodRounds; r++ {
		s0, t0 := syncs(), time.Now()
		measure(per, &quiet, &quietAcq)
		quietWall += time.Since(t0)
		quietSyncs += syncs() - s0

		runFlood(fmt.Sprintf("flooder-%d", r+1), func() {
			time.Sleep(500 * time.Millisecond) // let the flood reach its caps
			s0, t0 := syncs(), time.Now()
			measure(per, &flood, &floodAcq)
			floodWall += time.Since(t0)
			floodSyncs += syncs() - s0
		})
	}
	b.StopTimer()
	b.Logf("b.N=%d: %d flooder children, on average %v from start to flooding and %v from SIGTERM to exit",
		b.N, children, (childSetUp / time.Duration(children)).Round(time.Millisecond),
		(childStop / time.Duration(children)).Round(time.Millisecond))
	for _, l := range [][]time.Duration{quiet, flood, quietAcq, floodAcq} {
		slices.Sort(l)
	}
	pct := func(l []time.Duration, p int) float64 { return float64(l[len(l)*p/100].Microseconds()) }
	b.ReportMetric(pct(quietAcq, 99), "quiet-acquire-p99-µs")
	b.ReportMetric(pct(floodAcq, 99), "flood-acquire-p99-µs")
	b.ReportMetric(pct(floodAcq, 99)/pct(quietAcq, 99), "acquire-p99-ratio")
	b.ReportMetric(pct(quiet, 50), "quiet-p50-µs")
	b.ReportMetric(pct(quiet, 99), "quiet-p99-µs")
	b.ReportMetric(pct(flood, 50), "flood-p50-µs")
	b.ReportMetric(pct(flood, 99), "flood-p99-µs")
	b.ReportMetric(pct(flood, 99)/pct(quiet, 99), "p99-ratio")
	b.ReportMetric(float64(floodOps)/floodSecs, "flood-ops/s")
	b.ReportMetric(float64(floodRefused), "flood-refused")
	b.ReportMetric(quietSyncs/quietWall.Seconds(), "quiet-syncs/s")
	b.ReportMetric(floodSyncs/floodWall.Seconds(), "flood-syncs/s")
}

// issueIdentity issues a client certificate for identity name with
// `lockd certs client` (extra: more of its flags) and returns a TLS
// configuration that presents it.
func issueIdentity(b testing.TB, c *cluster, name string, extra ...string) *tls.Config {
	b.Helper()
	c.lockdOK("certs-client-"+name, append([]string{"certs", "client", name, "--dir", c.certs}, extra...)...)
	conf, err := pki.LoadClientTLSConfig(filepath.Join(c.certs, "ca.crt"),
		filepath.Join(c.certs, "client-"+name+".crt"), filepath.Join(c.certs, "client-"+name+".key"))
	if err != nil {
		b.Fatal(err)
	}
	return conf
}

// writeClientConfig writes a client config file (client.LoadConfigFile)
// for the cluster and identity name, whose certificate issueIdentity made.
func writeClientConfig(path string, c *cluster, name string) error {
	cfg, err := json.Marshal(map[string]any{
		"endpoints": c.addrs,
		"ca":        filepath.Join(c.certs, "ca.crt"),
		"cert":      filepath.Join(c.certs, "client-"+name+".crt"),
		"key":       filepath.Join(c.certs, "client-"+name+".key"),
	})
	if err != nil {
		return fmt.Errorf("client config for %s: %w", name, err)
	}
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return fmt.Errorf("client config for %s: %w", name, err)
	}
	return nil
}

var (
	floodingLine = regexp.MustCompile(`(?m)^flooding$`)
	floodResult  = regexp.MustCompile(`(?m)^ops=(\d+) refused=(\d+) failed=(\d+) unclosed=(\d+) secs=([0-9.]+)$`)
)

// floodChild waits until the flooder child p floods, runs during, stops
// the child with SIGTERM and waits for it to exit 0, and adds its
// requests, refusals and seconds of flooding to ops, refused and secs.
func floodChild(ctx context.Context, p *proc, during func(), ops, refused *int64, secs *float64) error {
	if p.out.waitCtx(ctx, floodingLine, p.done) == nil {
		if p.exited() {
			return fmt.Errorf("%s exited with code %d before it flooded", p.name, p.code)
		}
		return fmt.Errorf("%s: no %q line: %w", p.name, "flooding", ctx.Err())
	}
	during()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("%s did not exit after SIGTERM: %w", p.name, ctx.Err())
	}
	if p.code != 0 {
		return fmt.Errorf("%s exited with code %d after SIGTERM", p.name, p.code)
	}
	m := floodResult.FindStringSubmatch(p.out.String())
	if m == nil {
		return fmt.Errorf("%s printed no result line:\n%s", p.name, tail(p.out.String(), 5))
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	r, _ := strconv.ParseInt(m[2], 10, 64)
	s, _ := strconv.ParseFloat(m[5], 64)
	if m[3] != "0" || m[4] != "0" {
		// Not fatal: failed requests are part of what a flood meets, and
		// a session left open expires with its TTL; but they are worth
		// a look when the figures are odd.
		p.t.Logf("%s: %s", p.name, m[0])
	}
	*ops += n
	*refused += r
	*secs += s
	return nil
}

// nodeSyncs is lockd_store_sync_seconds_count, the synced writes of the
// nodes' Paxos state, summed over the nodes whose admin addresses are
// admins.
func nodeSyncs(admins []string) (float64, error) {
	var sum float64
	for _, a := range admins {
		page, err := httpGet("http://" + a + "/metrics")
		if err != nil {
			return 0, fmt.Errorf("metrics of %s: %w", a, err)
		}
		v, ok := metricValue(page, "lockd_store_sync_seconds_count")
		if !ok {
			return 0, fmt.Errorf("metrics of %s: no lockd_store_sync_seconds_count", a)
		}
		sum += v
	}
	return sum, nil
}

// floodMain is the "flood" helper role, BenchmarkFloodIsolationProcesses's
// flooder: with the client config file in helperConfig, it opens
// floodSessions sessions and runs floodSessions*floodDepth loops that
// acquire and release their own names as fast as they can. Once every
// loop has been round its names once (so that every session is open in
// every group it uses, and the flood's set-up is not counted), it prints
// "flooding"; on SIGTERM it stops and prints
// "ops=N refused=R failed=F unclosed=U secs=S": the requests done (an
// acquire+release is two) and refused, and the other failures, since
// "flooding", the sessions it could not close, and the seconds from
// "flooding" to SIGTERM. Then it exits 0. The client's log goes to stderr.
func floodMain() int {
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(sigCtx, floodChildLimit)
	defer cancel()
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "flooder: %s: %v\n", what, err)
		return 1
	}
	cfg, err := client.LoadConfigFile(os.Getenv(helperConfig))
	if err != nil {
		return fail("config", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cl, err := client.New(ctx, cfg)
	if err != nil {
		return fail("connect", err)
	}
	defer cl.Close()
	sessions := make([]*client.Session, floodSessions)
	for k := range sessions {
		if sessions[k], err = cl.NewSession(ctx, client.SessionOptions{TTL: 30 * time.Second}); err != nil {
			return fail("new session", err)
		}
	}

	var ops, refused, failed atomic.Int64
	var wg, warm sync.WaitGroup
	for i := 0; i < floodSessions*floodDepth; i++ {
		wg.Add(1)
		warm.Add(1)
		go func() {
			defer wg.Done()
			s := sessions[i/floodDepth]
			warmed := false
			markWarm := func() {
				if !warmed {
					warmed = true
					warm.Done()
				}
			}
			defer markWarm() // stopped before it went round
			for j := 0; ctx.Err() == nil; j++ {
				if j == floodNames {
					markWarm()
				}
				l, err := s.Acquire(ctx, fmt.Sprintf("flood-%d-%d", i, j%floodNames), client.LockOptions{})
				if err == nil {
					err = l.Release(ctx)
					if err == nil {
						ops.Add(2)
						continue
					}
				}
				var e *client.Error
				switch {
				case ctx.Err() != nil: // stopping
				case errors.As(err, &e):
					refused.Add(1)
				default:
					failed.Add(1)
				}
			}
		}()
	}
	warmed := make(chan struct{})
	go func() {
		warm.Wait()
		close(warmed)
	}()
	select {
	case <-warmed:
	case <-ctx.Done():
		wg.Wait()
		return fail("warming up", ctx.Err())
	}
	ops0, refused0, failed0, t0 := ops.Load(), refused.Load(), failed.Load(), time.Now()
	fmt.Println("flooding")

	<-ctx.Done()
	secs := time.Since(t0).Seconds()
	n, r, f := ops.Load()-ops0, refused.Load()-refused0, failed.Load()-failed0
	if sigCtx.Err() == nil {
		wg.Wait()
		return fail("flooding", fmt.Errorf("no SIGTERM within %v", floodChildLimit))
	}
	wg.Wait()
	// Close the sessions on the cluster, so that their expiry (a write in
	// every group they used) does not fall into a later quiet phase.
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer closeCancel()
	var unclosed atomic.Int64
	var closing sync.WaitGroup
	for _, s := range sessions {
		closing.Add(1)
		go func() {
			defer closing.Done()
			if err := s.Close(closeCtx); err != nil {
				unclosed.Add(1)
				fmt.Fprintf(os.Stderr, "flooder: close session: %v\n", err)
			}
		}()
	}
	closing.Wait()
	fmt.Printf("ops=%d refused=%d failed=%d unclosed=%d secs=%.3f\n", n, r, f, unclosed.Load(), secs)
	return 0
}
