package server_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/localcluster"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// f4Cluster starts 5 nodes with one group on the fault network, with
// snapshots every 100 slots and 20 slots of margin, and a client.
func f4Cluster(t *testing.T) (*localcluster.Cluster, *client.Client) {
	t.Helper()
	var logger *slog.Logger
	if os.Getenv("LOCKD_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	c, err := localcluster.Start(localcluster.Options{Nodes: 5, Groups: 1, Faults: true, Dir: t.TempDir(), Logger: logger,
		Tune: func(cfg *server.Config) { cfg.SnapshotEvery, cfg.SnapshotMargin = 100, 20 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tlsConf, err := c.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f4HangGuard)
	defer cancel()
	if _, err := c.WaitForMasters(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(context.Background(), client.Config{Endpoints: c.Endpoints(), TLS: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return c, cl
}

const f4HangGuard = 3 * time.Minute

// lockTraffic takes and releases locks (two slots each, rounds times), and
// leaves held locks (with meta bytes of metadata each) behind, so that the
// table is not empty; names start with prefix, and a new session takes them.
func lockTraffic(t *testing.T, cl *client.Client, prefix string, rounds, held, meta int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), f4HangGuard)
	defer cancel()
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			// Each worker churns its own names: one session may not wait
			// for the same name twice at once, and workers share a session.
			for i := w; i < rounds; i += 8 {
				l, err := sess.Acquire(ctx, fmt.Sprintf("%s-churn-%d-%d", prefix, w, (i/8)%6), client.LockOptions{})
				if err == nil {
					err = l.Release(ctx)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			for i := w; i < held; i += 8 {
				if _, err := sess.Acquire(ctx, fmt.Sprintf("%s-held-%d", prefix, i), client.LockOptions{Metadata: bytes.Repeat([]byte{byte(i)}, meta)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// dupLinks makes every link between running nodes duplicate a fifth of its
// packets and delay them by 1–3ms, so requests and answers race.
func dupLinks(t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	for i := range c.N() {
		f := c.Fault(i)
		if f == nil {
			continue
		}
		for j := range c.N() {
			if i == j {
				continue
			}
			addr, err := net.ResolveUDPAddr("udp", c.Node(j).Addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.SetLink(addr, quicnet.Link{Duplicate: 0.2, Delay: time.Millisecond, Jitter: 2 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// waitSameTables waits until every running node's lock table is the same
// bytes, and returns them.
func waitSameTables(t *testing.T, c *localcluster.Cluster, nodes []int) []byte {
	t.Helper()
	deadline := time.Now().Add(f4HangGuard)
	for {
		tables := make([][]byte, len(nodes))
		same := true
		for k, i := range nodes {
			tables[k] = c.Server(i).TableSnapshot(0)
			same = same && bytes.Equal(tables[k], tables[0])
		}
		if same {
			return tables[0]
		}
		if time.Now().After(deadline) {
			var sizes []string
			for k, i := range nodes {
				sizes = append(sizes, fmt.Sprintf("node %d: %d bytes", i+1, len(tables[k])))
			}
			t.Fatalf("the lock tables still differ after %v: %s", f4HangGuard, strings.Join(sizes, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitInstalled(t *testing.T, s *server.Server) {
	t.Helper()
	deadline := time.Now().Add(f4HangGuard)
	for s.SnapshotsInstalled() == 0 {
		if time.Now().After(deadline) {
			st, done, ab := server.SnapshotTransfers(s)
			t.Fatalf("no snapshot installed after %v (transfers started %d, done %d, abandoned %d)", f4HangGuard, st, done, ab)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestF4LaggingNodeTakesOneSnapshot is field report F4: five nodes, node 5
// stopped while the others apply far more slots than their logs keep; it
// comes back on a network that duplicates and delays packets, with four
// peers able to send. It installs exactly one snapshot, and its lock table
// ends equal to the others'.
func TestF4LaggingNodeTakesOneSnapshot(t *testing.T) {
	c, cl := f4Cluster(t)
	const lag = 4
	lockTraffic(t, cl, "a", 40, 10, 16) // node 5 has some state of its own
	if err := c.Stop(lag); err != nil {
		t.Fatal(err)
	}
	lockTraffic(t, cl, "b", 600, 100, 64) // ~1,400 slots: 14 snapshots, margin 20
	all := []int{0, 1, 2, 3, 4}
	want := waitSameTables(t, c, all[:lag])
	dupLinks(t, c)
	if err := c.Restart(lag); err != nil {
		t.Fatal(err)
	}
	dupLinks(t, c)
	waitInstalled(t, c.Server(lag))
	got := waitSameTables(t, c, all)
	if !bytes.Equal(got, want) {
		t.Fatal("the tables agree, but not with the table before node 5 came back")
	}
	st, done, ab := server.SnapshotTransfers(c.Server(lag))
	t.Logf("node 5: %d transfers started, %d done, %d abandoned; table %d bytes", st, done, ab, len(got))
	if n := c.Server(lag).SnapshotsInstalled(); n != 1 {
		t.Fatalf("node 5 installed %d snapshots, want exactly 1", n)
	}
}

// TestF4SenderDiesMidTransfer: the peer that serves the lagging node stops
// after its first chunks; the receiver abandons the stalled transfer and
// gets the snapshot from another peer.
func TestF4SenderDiesMidTransfer(t *testing.T) {
	c, cl := f4Cluster(t)
	const lag = 4
	if err := c.Stop(lag); err != nil {
		t.Fatal(err)
	}
	// 300 locks of 4 KiB metadata: a snapshot of some 1.3 MB, 5 chunks.
	lockTraffic(t, cl, "a", 200, 300, 4<<10)
	var killed atomic.Int32
	killed.Store(-1)
	for i := range lag {
		server.SetSnapshotHooks(c.Server(i), 0, func(to paxos.NodeID, offset, total uint64) {
			if offset > 0 && killed.CompareAndSwap(-1, int32(i)) {
				t.Logf("node %d sent a chunk at %d of %d bytes to node %d: stopping it", i+1, offset, total, to)
				go c.Stop(i)
			}
		})
	}
	if err := c.Restart(lag); err != nil {
		t.Fatal(err)
	}
	server.SetSnapshotHooks(c.Server(lag), 2*time.Second, nil)
	waitInstalled(t, c.Server(lag))
	if killed.Load() < 0 {
		t.Fatal("no sender was stopped mid-transfer")
	}
	var running []int
	for i := range c.N() {
		if c.Running(i) {
			running = append(running, i)
		}
	}
	waitSameTables(t, c, running)
	st, done, ab := server.SnapshotTransfers(c.Server(lag))
	t.Logf("node 5: %d transfers started, %d done, %d abandoned", st, done, ab)
	if ab == 0 || done == 0 {
		t.Fatalf("transfers: %d done, %d abandoned; want the first abandoned and a later one done", done, ab)
	}
}
