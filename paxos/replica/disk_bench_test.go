package replica

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
)

// tableSM is the real lock table as a replicated state machine, with
// snapshots, for one group.
type tableSM struct {
	mu sync.Mutex
	t  *lease.Table
}

func (m *tableSM) Apply(g paxos.GroupID, slot uint64, index int, cmd *paxos.Command) []byte {
	c, err := lease.DecodeCommand(cmd.Data)
	if err != nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.t.Apply(lease.Position{Slot: slot, Index: uint32(index)}, c)
	return []byte{byte(r.Code)}
}

func (m *tableSM) SnapshotGroup(paxos.GroupID) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.Snapshot(), nil
}

func (m *tableSM) RestoreGroup(_ paxos.GroupID, data []byte) error {
	t := lease.New(lease.DefaultLimits())
	if err := t.Restore(data); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t = t
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// BenchmarkBoundedDisk (issue 11) drives lock commands (acquire and
// release of 1000 names by 64 sessions) through three replicas on real
// pebble stores, snapshotting every 10000 slots, and reports the largest
// data dir it saw in the second half of the run next to the one at half
// time: with compaction the two stay close however long the run. It also
// restarts one node at the end and reports how long its store took to open
// and its replica to restore and replay. Run it long:
//
//	go test ./paxos/replica -run '^$' -bench BoundedDisk -benchtime 10000000x -timeout 3h
func BenchmarkBoundedDisk(b *testing.B) {
	root := b.TempDir()
	ids := []paxos.NodeID{1, 2, 3}
	net := NewMemNetwork()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	open := func(id paxos.NodeID) (*pebblestore.Store, *Replica) {
		dir := filepath.Join(root, fmt.Sprint(id))
		st, err := pebblestore.Open(dir, pebblestore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := st.CheckMeta(pebblestore.Meta{ClusterID: "bench", Groups: 1, NodeID: uint32(id)}); err != nil {
			b.Fatal(err)
		}
		r, err := New(Config{
			Core:         paxos.Config{ID: id, Nodes: ids, Groups: 1, AutoCampaign: true, ElectionTicks: 20},
			Tick:         5 * time.Millisecond,
			Store:        st,
			Transport:    net,
			StateMachine: &tableSM{t: lease.New(lease.DefaultLimits())},
			Logger:       quietLogger(),
		})
		if err != nil {
			b.Fatal(err)
		}
		net.Register(id, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run(ctx)
		}()
		return st, r
	}
	stores := map[paxos.NodeID]*pebblestore.Store{}
	reps := map[paxos.NodeID]*Replica{}
	for _, id := range ids {
		stores[id], reps[id] = open(id)
	}
	c := &cluster{net: net, replicas: []*Replica{reps[1], reps[2], reps[3]}}
	// The hang guard scales with the run: a 10-million-command run on a
	// busy machine takes far longer than a short one.
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Minute+time.Duration(b.N)*time.Millisecond)
	defer pcancel()
	const sessions, names = 64, 1000
	propose := func(client, seq uint64, cmd lease.Command) lease.Code {
		res, err := c.propose(pctx, 0, paxos.Command{ID: paxos.CommandID{Client: client, Seq: seq}, Ack: seq, Data: cmd.Encode()})
		if err != nil {
			b.Fatalf("client %d seq %d: %v", client, seq, err)
		}
		return lease.Code(res.Value[0])
	}
	sess := make([]uint64, sessions)
	for i := range sessions {
		propose(uint64(i+1), 1, lease.Command{Op: lease.OpOpenSession, Client: uint64(i + 1), TTL: time.Hour, Now: time.Now().UnixNano()})
		sess[i] = uint64(i + 1)
	}
	var done atomic.Int64
	var peakLate, atHalf atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	began := time.Now()
	go func() { // sample the data dir of node 1
		defer close(sampled)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		// Log the size at every twentieth of the run, so a long run shows
		// the curve levelling off, not only two points of it.
		step := max(int64(b.N)/20, 1)
		nextLog := step
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sz := dirBytes(filepath.Join(root, "1"))
				if n := done.Load(); n >= nextLog {
					fmt.Fprintf(os.Stderr, "BoundedDisk N=%d: %d commands done after %s, data dir of node 1 %.2f MiB\n",
						b.N, n, time.Since(began).Round(time.Second), float64(sz)/(1<<20))
					for nextLog <= n {
						nextLog += step
					}
				}
				if n := done.Load(); n >= int64(b.N)/2 {
					if atHalf.Load() == 0 {
						atHalf.Store(sz)
					}
					if sz > peakLate.Load() {
						peakLate.Store(sz)
					}
				}
			}
		}
	}()
	b.ResetTimer()
	var next atomic.Int64
	var pw sync.WaitGroup
	for i := range sessions {
		pw.Add(1)
		go func() {
			defer pw.Done()
			seq := uint64(1)
			for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
				name := fmt.Sprintf("lock-%d", (int(n)*7+i)%names)
				op := lease.OpAcquire
				if n%2 == 0 {
					op = lease.OpRelease
				}
				seq++
				propose(uint64(i+1), seq, lease.Command{Op: op, Session: sess[i], Name: name, Now: time.Now().UnixNano()})
				done.Add(1)
			}
		}()
	}
	pw.Wait()
	b.StopTimer()
	close(stop)
	<-sampled
	b.ReportMetric(float64(atHalf.Load())/(1<<20), "MiB-at-half")
	b.ReportMetric(float64(peakLate.Load())/(1<<20), "MiB-peak-2nd-half")
	b.ReportMetric(float64(dirBytes(filepath.Join(root, "1")))/(1<<20), "MiB-end")

	// Restart node 3 from its data dir.
	cancel()
	wg.Wait()
	for _, st := range stores {
		st.Close()
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	start := time.Now()
	st, err := pebblestore.Open(filepath.Join(root, "3"), pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Verify(); err != nil {
		b.Fatal(err)
	}
	r, err := New(Config{
		Core:  paxos.Config{ID: 3, Nodes: ids, Groups: 1},
		Store: st, Transport: NewMemNetwork(), StateMachine: &tableSM{t: lease.New(lease.DefaultLimits())},
		Logger: quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	go r.Run(ctx2)
	for {
		s, err := r.Status(ctx2, 0)
		if err != nil {
			b.Fatal(err)
		}
		if s.Applied >= s.Commit {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(time.Since(start).Seconds(), "restart-s")
	fmt.Fprintf(os.Stderr, "BoundedDisk N=%d: data dir %.1f MiB at half time, peak %.1f MiB in the second half\n", b.N, float64(atHalf.Load())/(1<<20), float64(peakLate.Load())/(1<<20))
}
