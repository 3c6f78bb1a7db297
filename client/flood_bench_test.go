package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
)

// BenchmarkFloodIsolation measures one identity's acquire+release latency
// while it is alone, and again while another identity floods the cluster
// up to its per-identity caps (server.DefaultIdentityLimits): 64 sessions
// acquiring and releasing as fast as they can, each with watches. It
// reports the victim's p99 in both phases and their ratio (issue 10: the
// ratio should stay within 2). It runs with the default request-rate cap
// and with a cap of 500 requests/s per identity per node.
//
//	go test ./client -run '^$' -bench FloodIsolation -benchtime 400x
func BenchmarkFloodIsolation(b *testing.B) {
	for _, rate := range []float64{0, 500} {
		name := "rate=default"
		if rate > 0 {
			name = fmt.Sprintf("rate=%g", rate)
		}
		b.Run(name, func(b *testing.B) { benchFlood(b, rate) })
	}
}

// benchFlood runs the benchmark with the per-identity request rate cap set
// to rate (0: the default).
func benchFlood(b *testing.B, rate float64) {
	lim := server.DefaultIdentityLimits()
	if rate > 0 {
		lim.RequestsPerSecond, lim.RequestBurst = rate, int(rate)
	}
	lc, err := localcluster.Start(localcluster.Options{Nodes: 3, Groups: 4, Lease: time.Second, Dir: b.TempDir(),
		Logger: testLogger(), Tune: func(c *server.Config) { c.IdentityLimits = &lim }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lc.Close() })
	tc := &testCluster{t: b, lc: lc, ca: lc.CA(), addrs: lc.Endpoints()}
	identity := func(name string) *Client {
		certPEM, keyPEM, err := tc.ca.IssueClient(name)
		if err != nil {
			b.Fatal(err)
		}
		tlsConf, err := pki.ClientTLSConfig(tc.ca.CertPEM(), certPEM, keyPEM)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c, err := New(ctx, Config{Endpoints: tc.addrs, TLS: tlsConf, Logger: testLogger()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	ctx := context.Background()
	victim := identity("victim")
	vs, err := victim.NewSession(ctx, SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	measure := func(n int) []time.Duration {
		lat := make([]time.Duration, 0, n)
		for j := 0; j < n; j++ {
			t0 := time.Now()
			l, err := vs.Acquire(ctx, fmt.Sprintf("victim-%d", j%8), LockOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		return lat
	}
	measure(16) // warm up: connect to every master
	b.ResetTimer()
	quiet := measure(b.N)

	flooder := identity("flooder")
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ops, refused atomic.Int64
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := flooder.NewSession(fctx, SessionOptions{TTL: 10 * time.Second})
			if err != nil {
				return
			}
			for j := 0; fctx.Err() == nil; j++ {
				l, err := s.Acquire(fctx, fmt.Sprintf("flood-%d-%d", i, j%4), LockOptions{})
				if err != nil {
					var e *Error
					if errors.As(err, &e) {
						refused.Add(1)
					}
					continue
				}
				l.Release(fctx)
				ops.Add(2)
			}
		}()
	}
	time.Sleep(time.Second) // let the flood reach its caps
	before := ops.Load()
	t0 := time.Now()
	flood := measure(b.N)
	floodRate := float64(ops.Load()-before) / time.Since(t0).Seconds()
	stop()
	wg.Wait()
	b.StopTimer()
	p99 := func(l []time.Duration) time.Duration { return l[len(l)*99/100] }
	b.ReportMetric(float64(quiet[len(quiet)/2].Microseconds()), "quiet-p50-µs")
	b.ReportMetric(float64(p99(quiet).Microseconds()), "quiet-p99-µs")
	b.ReportMetric(float64(flood[len(flood)/2].Microseconds()), "flood-p50-µs")
	b.ReportMetric(float64(p99(flood).Microseconds()), "flood-p99-µs")
	b.ReportMetric(float64(p99(flood))/float64(p99(quiet)), "p99-ratio")
	b.ReportMetric(floodRate, "flood-ops/s")
	b.ReportMetric(float64(refused.Load()), "flood-refused")
}
