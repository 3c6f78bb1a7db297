package quicnet

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPeerSend measures one-way throughput of small messages from node
// 1 to node 2 over loopback, on all lanes, with coalescing. It reports
// messages per second and payload MB/s. A full queue makes the sender pause
// briefly and retry, so every message is delivered and counted.
func BenchmarkPeerSend(b *testing.B) {
	for _, size := range []int{64, 512} {
		b.Run(sizeName(size), func(b *testing.B) { benchPeerSend(b, size) })
	}
}

func sizeName(n int) string {
	if n >= 1024 {
		return itoa(n/1024) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func benchPeerSend(b *testing.B, size int) {
	checkNoLeaks(b)
	var got atomic.Int64
	m := newMesh(b, 2, false, func(c *Config) {
		c.Handler = func(NodeID, []byte) { got.Add(1) }
	})
	m.waitConnected(b)
	msg := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	// A classic b.N loop, not b.Loop: the timed part must include the wait
	// for the last message to arrive.
	for i := range b.N {
		for {
			err := m.nodes[1].Send(2, i, msg)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) {
				b.Fatal(err)
			}
			// Back off briefly, as a producer would: spinning would
			// steal the CPU the writer needs to drain the queue.
			time.Sleep(20 * time.Microsecond)
		}
	}
	waitFor(b, 30*time.Second, "all messages delivered", func() bool { return got.Load() == int64(b.N) })
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// BenchmarkFirstRequestOnFreshConnection measures F5's figure: the first
// request on a freshly dialled client connection (one round trip, never a
// timer tick), beside a later request on the same connection. It reports
// both as first-ns/op and later-ns/op; the dial itself is not timed.
func BenchmarkFirstRequestOnFreshConnection(b *testing.B) {
	checkNoLeaks(b)
	p := newTestPKI(b)
	n := startServer(b, p, nil)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	payload := []byte("acquire lock/a")
	var first, later time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c := dial(b, n, p, "alice")
		b.StartTimer()
		start := time.Now()
		if _, err := request(ctx, c, payload); err != nil {
			b.Fatal(err)
		}
		first += time.Since(start)
		start = time.Now()
		if _, err := request(ctx, c, payload); err != nil {
			b.Fatal(err)
		}
		later += time.Since(start)
		b.StopTimer()
		c.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(first.Nanoseconds())/float64(b.N), "first-ns/op")
	b.ReportMetric(float64(later.Nanoseconds())/float64(b.N), "later-ns/op")
}
