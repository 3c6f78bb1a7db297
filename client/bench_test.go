package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkAcquireRelease measures one acquire followed by its release
// through three real nodes on 127.0.0.1 (each with real pebble fsyncs):
// two Paxos commands per op. It reports ops/s and the latency of a whole
// op at the 50th and 99th percentile.
//
//	go test ./client -run '^$' -bench AcquireRelease -benchtime 2000x
func BenchmarkAcquireRelease(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", par), func(b *testing.B) {
			tc := startCluster(b, 3, 4)
			c := tc.client()
			ctx := context.Background()
			sessions := make([]*Session, par)
			for i := range sessions {
				s, err := c.NewSession(ctx, SessionOptions{TTL: 10 * time.Second})
				if err != nil {
					b.Fatal(err)
				}
				// Warm up: open the session in every group, connect to every master.
				for j := 0; j < 8; j++ {
					l, err := s.Acquire(ctx, fmt.Sprintf("bench-%d-%d", i, j), LockOptions{})
					if err != nil {
						b.Fatal(err)
					}
					l.Release(ctx)
				}
				sessions[i] = s
			}
			lat := make([][]time.Duration, par)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i := 0; i < par; i++ {
				n := b.N / par
				if i < b.N%par {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := sessions[i]
					for j := 0; j < n; j++ {
						name := fmt.Sprintf("bench-%d-%d", i, j%8)
						t0 := time.Now()
						l, err := s.Acquire(ctx, name, LockOptions{})
						if err != nil {
							b.Error(err)
							return
						}
						if err := l.Release(ctx); err != nil {
							b.Error(err)
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
