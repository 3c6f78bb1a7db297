package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/procs"
	"github.com/lockd/lockd/internal/server"
)

// floodRounds is how many quiet and flooded phases BenchmarkFloodIsolation
// interleaves. Alternating them in one run, on one cluster, lets both
// conditions see the same machine: the host is shared, and its load drifts
// over tens of seconds, which would favour whichever phase ran when it
// was idle if each ran once.
const floodRounds = 12

// The flooder has floodSessions sessions, and floodDepth acquire+release
// loops on each (each on its own names): floodSessions*floodDepth requests
// outstanding at once, well within its caps, as a client that pipelines
// would have.
const (
	floodSessions = 64
	floodDepth    = 8
)

// BenchmarkFloodIsolation measures one identity's (the victim's)
// acquire+release latency while it is alone, and while another identity
// floods the cluster within its per-identity caps
// (server.DefaultIdentityLimits): 512 loops over 64 sessions, each
// acquiring and releasing as fast as it can. Quiet and flooded phases
// alternate floodRounds times on the same cluster; each phase measures
// b.N/floodRounds ops. It reports
// the victim's p50 and p99 in both conditions and the p99 ratio (issue 10:
// it should stay within 2), the flood's throughput and refusals, and the
// process's CPU use in each condition (cores busy: the nodes, the flooder
// and the victim all share this process), and the disk's part in each
// condition: the nodes' synced writes per second, their mean and p99 (to
// the histogram's bucket) time, and the bytes written per second (all
// three nodes' data dirs share one disk here). It runs with the default
// request-rate cap and with a cap of 500 requests/s per identity per node.
//
//	go test ./client -run '^$' -bench FloodIsolation/rate=default -benchtime 480x
//
// The nodes run with the GOMAXPROCS lockd gives itself (internal/procs:
// at least 8), unless the GOMAXPROCS variable is set: with 2, two fsyncs in
// flight hold both Ps, and every goroutine of the process waits.
//
// LOCKD_FLOOD_LOOPS=N runs a flood of N loops instead of 512.
// LOCKD_FLOOD_YIELD_GAP=D sets the nodes' yield gap (server.Config.YieldGap;
// "off" turns it off), so one binary can be measured both ways.
// LOCKD_FLOOD_PROFILE=DIR writes CPU profiles of the first quiet and
// flooded phases to DIR. docs/benchmarks.md has the figures.
func BenchmarkFloodIsolation(b *testing.B) {
	rates := []float64{0, 500}
	if env := os.Getenv("LOCKD_FLOOD_RATES"); env != "" {
		// Other caps to try, e.g. LOCKD_FLOOD_RATES=100,200: where the
		// flood stops hurting (docs/benchmarks.md section 8).
		rates = rates[:1]
		for _, f := range strings.Split(env, ",") {
			r, err := strconv.ParseFloat(f, 64)
			if err != nil || r <= 0 {
				b.Fatalf("LOCKD_FLOOD_RATES: %q is not a rate", f)
			}
			rates = append(rates, r)
		}
	}
	for _, rate := range rates {
		name := "rate=default"
		if rate > 0 {
			name = fmt.Sprintf("rate=%g", rate)
		}
		b.Run(name, func(b *testing.B) { benchFlood(b, rate) })
	}
}

// writeBytes is what this process caused to be written to storage so far
// (/proc/self/io's write_bytes; 0 where that is not available).
func writeBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchFlood runs the benchmark with the per-identity request rate cap set
// to rate (0: the default).
func benchFlood(b *testing.B, rate float64) {
	prevProcs := runtime.GOMAXPROCS(0)
	procs.Tune(os.Getenv("GOMAXPROCS"))
	b.Cleanup(func() { runtime.GOMAXPROCS(prevProcs) })
	var yieldGap time.Duration
	switch env := os.Getenv("LOCKD_FLOOD_YIELD_GAP"); env {
	case "":
	case "off":
		yieldGap = -1
	default:
		d, err := time.ParseDuration(env)
		if err != nil || d <= 0 {
			b.Fatalf("LOCKD_FLOOD_YIELD_GAP: %q is neither a duration above 0 nor off", env)
		}
		yieldGap = d
	}
	lim := server.DefaultIdentityLimits()
	if rate > 0 {
		lim.RequestsPerSecond, lim.RequestBurst = rate, int(rate)
	}
	if env := os.Getenv("LOCKD_FLOOD_INFLIGHT"); env != "" {
		// Another proposals_in_flight cap to try.
		n, err := strconv.Atoi(env)
		if err != nil || n < 1 {
			b.Fatalf("LOCKD_FLOOD_INFLIGHT: %q is not a cap", env)
		}
		lim.ProposalsInFlight = n
	}
	// The default master lease and long session TTLs: on a shared 2-core
	// machine under the flood, a 1s lease can lapse and masters change,
	// which this benchmark does not mean to measure.
	lc, err := localcluster.Start(localcluster.Options{Nodes: 3, Groups: 4, Dir: b.TempDir(),
		Logger: testLogger(), Tune: func(c *server.Config) { c.IdentityLimits, c.YieldGap = &lim, yieldGap }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lc.Close() })
	tc := &testCluster{t: b, lc: lc, ca: lc.CA(), addrs: lc.Endpoints()}
	ctx := context.Background()
	victim := tc.clientAs("victim")
	vs, err := victim.NewSession(ctx, SessionOptions{TTL: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	// measure times n acquire+release pairs into pairs, and their
	// acquires alone into acquires (issue 10 names the acquire's p99).
	measure := func(n int, pairs, acquires *[]time.Duration) {
		for j := 0; j < n; j++ {
			t0 := time.Now()
			l, err := vs.Acquire(ctx, fmt.Sprintf("victim-%d", j%8), LockOptions{})
			if err != nil {
				b.Fatal(err)
			}
			*acquires = append(*acquires, time.Since(t0))
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
			*pairs = append(*pairs, time.Since(t0))
		}
	}

	// The flooder's workers run while flooding is set and park on the
	// gate otherwise, keeping their sessions.
	flooder := tc.clientAs("flooder")
	fctx, stop := context.WithCancel(ctx)
	var (
		gateMu   sync.Mutex
		gate     = sync.NewCond(&gateMu)
		flooding bool
		wg       sync.WaitGroup
		ops      atomic.Int64
		refused  atomic.Int64
		busy     atomic.Int64 // workers between two gate checks
	)
	setFlood := func(on bool) {
		gateMu.Lock()
		flooding = on
		gateMu.Unlock()
		gate.Broadcast()
	}
	waitGate := func() bool {
		gateMu.Lock()
		defer gateMu.Unlock()
		for !flooding && fctx.Err() == nil {
			gate.Wait()
		}
		return fctx.Err() == nil
	}
	sessions := make([]*Session, floodSessions)
	for k := range sessions {
		fs, err := flooder.NewSession(ctx, SessionOptions{TTL: 30 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		sessions[k] = fs
	}
	loops := floodSessions * floodDepth
	if env := os.Getenv("LOCKD_FLOOD_LOOPS"); env != "" {
		// A smaller flood (loops share the sessions in order, floodDepth
		// to a session): how much of the victim's cost is the flood's
		// size, and how much is any other identity's traffic at all.
		n, err := strconv.Atoi(env)
		if err != nil || n < 1 || n > loops {
			b.Fatalf("LOCKD_FLOOD_LOOPS: %q is not a number of loops from 1 to %d", env, loops)
		}
		loops = n
	}
	for i := 0; i < loops; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := sessions[i/floodDepth]
			for j := 0; waitGate(); j++ {
				busy.Add(1)
				l, err := s.Acquire(fctx, fmt.Sprintf("flood-%d-%d", i, j%4), LockOptions{})
				if err != nil {
					var e *Error
					if errors.As(err, &e) {
						refused.Add(1)
					}
				} else {
					l.Release(fctx)
					ops.Add(2)
				}
				busy.Add(-1)
			}
		}()
	}
	b.Cleanup(func() {
		stop()
		gate.Broadcast()
		wg.Wait()
	})
	// settle waits (bounded) until no flood op is in flight.
	settle := func() {
		for i := 0; i < 500 && busy.Load() > 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
	}

	var warm, warmAcq []time.Duration
	measure(16, &warm, &warmAcq) // connect to every master
	setFlood(true)               // warm the flooder's connections
	time.Sleep(time.Second)
	setFlood(false)
	settle()

	var quiet, flood, quietAcq, floodAcq []time.Duration
	var quietCPU, floodCPU, quietWall, floodWall time.Duration
	var floodOps, quietWritten, floodWritten int64
	var quietSums, floodSums localcluster.ServerSums
	addSums := func(into *localcluster.ServerSums, a, b localcluster.ServerSums) {
		into.Syncs += b.Syncs - a.Syncs
		into.SyncSeconds += b.SyncSeconds - a.SyncSeconds
		into.Yields += b.Yields - a.Yields
		if into.SyncBuckets == nil {
			into.SyncBuckets = map[float64]float64{}
		}
		for le, v := range b.SyncBuckets {
			into.SyncBuckets[le] += v - a.SyncBuckets[le]
		}
	}
	per := max(1, b.N/floodRounds)
	b.ResetTimer()
	for r := 0; r < floodRounds; r++ {
		c0, t0, s0, w0 := cpuTime(), time.Now(), lc.Sums(), writeBytes()
		stopProf := phaseProfile(b, r, "quiet")
		measure(per, &quiet, &quietAcq)
		stopProf()
		quietWritten += writeBytes() - w0
		addSums(&quietSums, s0, lc.Sums())
		quietCPU += cpuTime() - c0
		quietWall += time.Since(t0)

		setFlood(true)
		time.Sleep(500 * time.Millisecond) // let the flood reach its caps
		o0, c0, t0, s0, w0 := ops.Load(), cpuTime(), time.Now(), lc.Sums(), writeBytes()
		stopProf = phaseProfile(b, r, "flood")
		measure(per, &flood, &floodAcq)
		stopProf()
		floodWritten += writeBytes() - w0
		addSums(&floodSums, s0, lc.Sums())
		floodCPU += cpuTime() - c0
		floodWall += time.Since(t0)
		floodOps += ops.Load() - o0
		setFlood(false)
		settle()
	}
	b.StopTimer()
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
	b.ReportMetric(float64(floodOps)/floodWall.Seconds(), "flood-ops/s")
	b.ReportMetric(float64(refused.Load()), "flood-refused")
	b.ReportMetric(quietCPU.Seconds()/quietWall.Seconds(), "quiet-cores")
	b.ReportMetric(floodCPU.Seconds()/floodWall.Seconds(), "flood-cores")
	// The nodes' synced writes per second and their mean time: all three
	// nodes' data dirs share one disk here, and the victim's writes queue
	// behind the flood's (docs/benchmarks.md 8.4).
	b.ReportMetric(float64(quietWritten)/quietWall.Seconds()/1e6, "quiet-written-MB/s")
	b.ReportMetric(float64(floodWritten)/floodWall.Seconds()/1e6, "flood-written-MB/s")
	b.ReportMetric(quietSums.Syncs/quietWall.Seconds(), "quiet-syncs/s")
	b.ReportMetric(floodSums.Syncs/floodWall.Seconds(), "flood-syncs/s")
	b.ReportMetric(floodSums.Yields/floodWall.Seconds(), "flood-yields/s")
	if quietSums.Syncs > 0 {
		b.ReportMetric(quietSums.SyncSeconds/quietSums.Syncs*1e6, "quiet-sync-µs")
	}
	if floodSums.Syncs > 0 {
		b.ReportMetric(floodSums.SyncSeconds/floodSums.Syncs*1e6, "flood-sync-µs")
	}
	if q, f := bucketQuantile(quietSums.SyncBuckets, 0.99), bucketQuantile(floodSums.SyncBuckets, 0.99); q > 0 && f > 0 {
		b.ReportMetric(q*1e6, "quiet-sync-p99-µs")
		b.ReportMetric(f*1e6, "flood-sync-p99-µs")
	}
}

// phaseProfile writes a CPU profile of the first round's phase to
// $LOCKD_FLOOD_PROFILE/<phase>.prof when that variable names a directory,
// so that the quiet and flooded phases can be compared apart (a -cpuprofile
// of the whole benchmark mixes them with the set-up).
func phaseProfile(b *testing.B, round int, phase string) (stop func()) {
	dir := os.Getenv("LOCKD_FLOOD_PROFILE")
	if dir == "" || round != 0 {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, phase+".prof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// bucketQuantile is the upper bound of the histogram bucket (cumulative
// counts by upper bound, as Prometheus exposes them) that holds quantile q:
// an upper estimate, as fine as the buckets.
func bucketQuantile(buckets map[float64]float64, q float64) float64 {
	les := slices.Sorted(maps.Keys(buckets))
	if len(les) == 0 {
		return 0
	}
	total := buckets[les[len(les)-1]]
	for _, le := range les {
		if buckets[le] >= q*total {
			return le
		}
	}
	return les[len(les)-1]
}
