package server_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/testcluster"
	"github.com/lockd/lockd/internal/wire"
)

// BenchmarkRawAcquireRelease measures acquire+release pairs through three
// real nodes with the bare protocol (no client library): each worker sends
// to the master of its lock's group on its own stream.
func BenchmarkRawAcquireRelease(b *testing.B) {
	for _, workers := range []int{1, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			tc := testcluster.Start(b, testcluster.Options{Groups: 4})
			masters := tc.WaitForMasters(10 * time.Second)
			t := &testing.T{}
			type worker struct {
				cl      *rawClient
				g       uint32
				name    string
				session uint64
				client  uint64
				seq     uint64
				lat     []time.Duration
			}
			ws := make([]*worker, workers)
			for i := range ws {
				name := fmt.Sprintf("bench-%d", i)
				g := wire.GroupOf(name, 4)
				w := &worker{g: g, name: name, client: uint64(1000 + i), seq: 1}
				var r wire.Msg
				// Masters may still move (a handover back to the preferred
				// node) just after start: follow them.
				for try := 0; ; try++ {
					w.cl = dialB(b, t, tc.Addr(masters[g]), tc)
					r = w.cl.call(wire.Msg{Type: wire.TypeOpenSession, Group: g, TTL: 30 * time.Second, Client: w.client, Seq: w.seq})
					if r.Code != wire.CodeNotMaster || try == 50 {
						break
					}
					time.Sleep(50 * time.Millisecond)
					masters = tc.WaitForMasters(10 * time.Second)
				}
				if r.Code != wire.CodeOK {
					b.Fatalf("open session: %+v", r)
				}
				w.session = r.Session
				ws[i] = w
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := b.N/workers + 1
			for _, w := range ws {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						t0 := time.Now()
						w.seq++
						a := w.cl.call(wire.Msg{Type: wire.TypeAcquire, Group: w.g, Session: w.session, Name: w.name, Client: w.client, Seq: w.seq, Ack: w.seq})
						if a.Code != wire.CodeOK {
							b.Errorf("acquire: %+v", a)
							return
						}
						w.seq++
						r := w.cl.call(wire.Msg{Type: wire.TypeRelease, Group: w.g, Session: w.session, Name: w.name, Token: a.Token, Client: w.client, Seq: w.seq, Ack: w.seq})
						if r.Code != wire.CodeOK {
							b.Errorf("release: %+v", r)
							return
						}
						w.lat = append(w.lat, time.Since(t0))
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			var all []time.Duration
			for _, w := range ws {
				all = append(all, w.lat...)
			}
			slices.Sort(all)
			b.ReportMetric(float64(len(all))/el.Seconds(), "pairs/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			var sum float64
			var cnt uint64
			for i := 0; i < tc.N(); i++ {
				s, c := tc.Server(i).Metrics().ProposeStats()
				sum += s
				cnt += c
			}
			b.ReportMetric(sum/float64(cnt)*1000, "propose-ms")
		})
	}
}
