package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/backup"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/replica"
)

// benchEnvInt reads a size for a benchmark from the environment.
func benchEnvInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// writeBigBackup builds the lock tables of a cluster of groups groups
// holding locks locks over sessions sessions (through lease.Table.Apply,
// as the log would), and writes them as a backup file. It returns the
// file's size and the sum of the groups' snapshot sizes.
func writeBigBackup(tb testing.TB, path string, groups, sessions, locks int) (fileBytes, snapBytes int64) {
	tb.Helper()
	lim := lease.DefaultLimits()
	tables := make([]*lease.Table, groups)
	slots := make([]uint64, groups)
	bySession := make([][]uint64, groups)
	now := time.Now().UnixNano()
	apply := func(g int, c lease.Command) lease.Result {
		slots[g]++
		c.Now = now
		r := tables[g].Apply(lease.Position{Slot: slots[g]}, c)
		if r.Code != lease.CodeOK {
			tb.Fatalf("group %d: %v: %v", g, c.Op, r.Err())
		}
		return r
	}
	for g := range tables {
		tables[g] = lease.New(lim)
	}
	for i := range sessions {
		g := i % groups
		r := apply(g, lease.Command{Op: lease.OpOpenSession, Client: uint64(i + 1), TTL: time.Hour, Caller: "bench"})
		bySession[g] = append(bySession[g], r.Session)
	}
	next := make([]int, groups)
	for i := range locks {
		name := fmt.Sprintf("bench/lock-%07d", i)
		g := int(wire.GroupOf(name, groups))
		ss := bySession[g]
		apply(g, lease.Command{Op: lease.OpAcquire, Session: ss[next[g]%len(ss)], Name: name, Caller: "bench"})
		next[g]++
	}
	elect, err := emptyElection()
	if err != nil {
		tb.Fatal(err)
	}
	applier := paxos.NewApplier(replica.DefaultMaxClients, 16).Snapshot()
	w, err := backup.Create(path, "bench", groups, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	for g, t := range tables {
		data := replica.SealSnapshot(slots[g]+1, applier, encodeGroupSnapshot(t.Snapshot(), elect, 0))
		snapBytes += int64(len(data))
		if err := w.Add(slots[g]+1, 1, data); err != nil {
			tb.Fatal(err)
		}
		tables[g] = nil
	}
	h, err := w.Close()
	if err != nil {
		tb.Fatal(err)
	}
	return h.Size(), snapBytes
}

// BenchmarkRestartBigState (issue 11) measures the restart of a node that
// holds LOCKD_BENCH_LOCKS locks (default 1,000,000) over
// LOCKD_BENCH_SESSIONS sessions (default 100,000) in 16 groups, on real
// pebble with real QUIC and TLS: the state is built through the lock table,
// saved as a backup and restored into a data dir (lockd restore's path),
// then each iteration opens the node (server.New: pebble open, Verify,
// snapshots restored into the tables) and runs it until it serves every
// group, and stops it. It reports the backup's and the snapshots' sizes,
// the restore's time, and per restart the open time and the time to serve
// every group. The node is a one-node cluster, so the figures are the
// node's own work, not its peers'.
//
//	go test ./internal/server -run '^$' -bench RestartBigState -benchtime 3x -timeout 1h
func BenchmarkRestartBigState(b *testing.B) {
	const groups = 16
	locks := benchEnvInt(b, "LOCKD_BENCH_LOCKS", 1_000_000)
	sessions := benchEnvInt(b, "LOCKD_BENCH_SESSIONS", 100_000)
	dir := b.TempDir()
	file := filepath.Join(dir, "big.backup")
	start := time.Now()
	fileBytes, snapBytes := writeBigBackup(b, file, groups, sessions, locks)
	b.Logf("built %d locks over %d sessions in %d groups in %v: backup %d bytes, snapshots %d bytes", locks, sessions, groups, time.Since(start).Round(time.Millisecond), fileBytes, snapBytes)
	dataDir := filepath.Join(dir, "data")
	start = time.Now()
	rep, err := Restore(context.Background(), RestoreConfig{From: file, DataDir: dataDir, NodeID: 1, Groups: groups, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	restoreTook := time.Since(start)
	if rep.Locks != locks || rep.Sessions != sessions {
		b.Fatalf("restored %d locks and %d sessions, want %d and %d", rep.Locks, rep.Sessions, locks, sessions)
	}
	ca, err := pki.NewCA("bench CA", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueNode("1", nil)
	if err != nil {
		b.Fatal(err)
	}
	tlsConf, err := pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		b.Fatal(err)
	}
	var opens, readies, cpus []time.Duration
	for b.Loop() {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		cpu0 := cpuTime()
		start := time.Now()
		s, err := New(Config{ID: 1, Peers: map[paxos.NodeID]string{1: pc.LocalAddr().String()}, PacketConn: pc, Groups: groups,
			DataDir: dataDir, ClusterID: "bench", TLS: tlsConf, Logger: discardLogger()})
		if err != nil {
			b.Fatal(err)
		}
		opened := time.Since(start)
		// On a busy machine the wall time is mostly waiting for a core;
		// the process's CPU time is the work itself.
		openCPU := cpuTime() - cpu0
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for served := 0; served < groups; {
			served = 0
			for g := range groups {
				if s.elector.Serving(paxos.GroupID(g), time.Now()) {
					served++
				}
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("only %d of %d groups served after 10 minutes", served, groups)
			}
			time.Sleep(time.Millisecond)
		}
		ready := time.Since(start)
		opens, readies, cpus = append(opens, opened), append(readies, ready), append(cpus, openCPU)
		b.Logf("restart: open %v (%v of CPU), every group served after %v", opened.Round(time.Millisecond), openCPU.Round(time.Millisecond), ready.Round(time.Millisecond))
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		pc.Close()
	}
	b.ReportMetric(float64(snapBytes), "snapshot-bytes")
	b.ReportMetric(float64(fileBytes), "backup-bytes")
	b.ReportMetric(restoreTook.Seconds(), "restore-s")
	b.ReportMetric(median(opens).Seconds(), "open-s")
	b.ReportMetric(median(readies).Seconds(), "ready-s")
	b.ReportMetric(median(cpus).Seconds(), "open-cpu-s")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
