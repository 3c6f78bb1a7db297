package replica

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
)

// BenchmarkCommit measures commits through three replicas in one process with
// real pebble stores (fsync on) in a temp dir and an in-memory network: the
// throughput and the p50/p99 latency of one Propose, for 1 and 8 groups,
// with the window forced to 1 and at its default (F3, F8, F9).
func BenchmarkCommit(b *testing.B) {
	for _, clients := range []int{16, 64} {
		for _, groups := range []int{1, 8} {
			for _, window := range []int{1, 64} {
				b.Run(fmt.Sprintf("clients=%d/groups=%d/window=%d", clients, groups, window), func(b *testing.B) {
					benchCommit(b, groups, window, clients, false)
				})
			}
		}
	}
}

var benchGroupCommitWait, _ = time.ParseDuration(os.Getenv("LOCKD_GROUP_COMMIT_WAIT"))

// BenchmarkCommitQUIC is BenchmarkCommit with the replicas talking over real
// QUIC peer connections (quicnet, mTLS, 127.0.0.1) instead of in memory: the
// difference is what the network stack costs a commit.
func BenchmarkCommitQUIC(b *testing.B) {
	for _, groups := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=16/groups=%d/window=64", groups), func(b *testing.B) {
			benchCommit(b, groups, 64, 16, true)
		})
	}
}

func benchCommit(b *testing.B, groups, window, clients int, overQUIC bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var counts saveCounts
	net := NewMemNetwork()
	ids := []paxos.NodeID{1, 2, 3}
	var qn *quicNet
	if overQUIC {
		qn = newQUICNet(b, ids)
	}
	var replicas []*Replica
	var wg sync.WaitGroup
	for _, id := range ids {
		st, err := pebblestore.Open(b.TempDir(), pebblestore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		r, err := New(Config{
			Core:            paxos.Config{ID: id, Nodes: ids, Groups: groups, Window: window, ElectionTicks: 50},
			Tick:            10 * time.Millisecond,
			GroupCommitWait: benchGroupCommitWait,
			Store:           &countStore{Store: st, n: &counts},
			Transport:       transportFor(net, qn, id),
			StateMachine:    &counter{},
		})
		if err != nil {
			b.Fatal(err)
		}
		net.Register(id, r)
		if qn != nil {
			qn.reps[id] = r
		}
		replicas = append(replicas, r)
	}
	for _, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				b.Errorf("replica: %v", err)
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()

	// Spread the masters as lockd does: group g on node g mod 3.
	masters := make([]*Replica, groups)
	for g := 0; g < groups; g++ {
		r := replicas[g%len(replicas)]
		if err := r.Campaign(ctx, paxos.GroupID(g)); err != nil {
			b.Fatal(err)
		}
		masters[g] = r
	}
	for g := 0; g < groups; g++ {
		for i := 0; ; i++ {
			st, err := masters[g].Status(ctx, paxos.GroupID(g))
			if err != nil {
				b.Fatal(err)
			}
			if st.Role == "master" {
				break
			}
			if i == 500 {
				b.Fatalf("group %d has no master after 5s: %+v", g, st)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	data := make([]byte, 100)
	counts.synced.Store(0) // only the measured commits count
	counts.nanos.Store(0)
	b.ResetTimer()
	start := time.Now()
	var cw sync.WaitGroup
	for c := 0; c < clients; c++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			g := paxos.GroupID(c % groups)
			for seq := uint64(1); next.Add(1) <= int64(b.N); seq++ {
				t0 := time.Now()
				cctx, cc := context.WithTimeout(ctx, 10*time.Second)
				_, err := masters[g].Propose(cctx, g, paxos.Command{ID: paxos.CommandID{Client: uint64(c + 1), Seq: seq}, Ack: seq, Data: data})
				cc()
				if err != nil {
					b.Errorf("propose: %v", err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	cw.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(float64(len(all)-1)*p)].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "commits/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	// Synced writes per commit, over all three nodes: the cost that
	// batching and group commit are there to cut.
	b.ReportMetric(float64(counts.synced.Load())/float64(len(all)), "syncs/commit")
	b.ReportMetric(float64(counts.nanos.Load())/float64(max(1, counts.synced.Load()))/1e3, "us/sync")
}

// saveCounts counts a store's synced writes and their time.
type saveCounts struct {
	synced, nanos atomic.Int64
}

// countStore counts the synced writes of a store.
type countStore struct {
	Store
	n *saveCounts
}

func (c *countStore) Save(w []paxos.GroupWrite) error {
	t := time.Now()
	err := c.Store.Save(w)
	c.n.nanos.Add(int64(time.Since(t)))
	c.n.synced.Add(1)
	return err
}

func (c *countStore) SaveUnsynced(w []paxos.GroupWrite) error {
	return c.Store.(UnsyncedSaver).SaveUnsynced(w)
}

func transportFor(mem *MemNetwork, qn *quicNet, id paxos.NodeID) Transport {
	if qn != nil {
		return quicTransport{n: qn, from: id}
	}
	return mem
}
