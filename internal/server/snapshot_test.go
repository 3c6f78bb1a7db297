package server

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
)

// snapServer is the part of a Server that group snapshots touch.
func snapServer(t testing.TB, self paxos.NodeID) *Server {
	t.Helper()
	el, err := election.New(election.Config{Self: self, Nodes: []paxos.NodeID{1, 2, 3}, Groups: 2, Rand: func(int) int { return 3 }})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: discardLogger(), elector: el, hub: newHub(), sessions: newSessionClock(), metrics: newMetrics()}
	for range 2 {
		s.groups = append(s.groups, &groupState{table: lease.New(lease.DefaultLimits())})
	}
	return s
}

// fillGroup opens sessions and takes locks in group g of s, and makes node
// 2 its master, through the same paths the replica's applies take.
func fillGroup(t testing.TB, s *Server, g paxos.GroupID, locks int) {
	t.Helper()
	now := time.Now()
	slot := uint64(1)
	apply := func(c lease.Command) lease.Result {
		c.Now = now.UnixNano()
		cmd := paxos.Command{Data: lockCommand(c)}
		r, err := decodeResult(s.Apply(g, slot, 0, &cmd))
		if err != nil {
			t.Fatal(err)
		}
		slot++
		return lease.Result{Code: lease.Code(r.code), Session: r.session, Token: r.token}
	}
	lc := election.LeaseCmd{Holder: 2, Duration: 2 * time.Second, Nonce: 5<<32 | 1}
	cmd := paxos.Command{Data: append([]byte{tagElection}, lc.Encode()...)}
	s.Apply(g, slot, 0, &cmd)
	slot++
	var sessions []uint64
	for i := range 10 {
		r := apply(lease.Command{Op: lease.OpOpenSession, Client: uint64(i + 1), TTL: 10 * time.Second})
		if r.Code != lease.CodeOK {
			t.Fatalf("open: %v", r.Code)
		}
		sessions = append(sessions, r.Session)
	}
	for i := range locks {
		r := apply(lease.Command{Op: lease.OpAcquire, Session: sessions[i%len(sessions)], Name: fmt.Sprintf("lock-%d", i), Wait: true, Metadata: []byte("m")})
		if r.Code != lease.CodeOK && r.Code != lease.CodeQueued {
			t.Fatalf("acquire: %v", r.Code)
		}
	}
}

// TestGroupSnapshotRoundTrip: a restored group has the lock table, the
// master and the session clock's membership of the node it came from, and
// a damaged snapshot changes nothing.
func TestGroupSnapshotRoundTrip(t *testing.T) {
	a, b := snapServer(t, 1), snapServer(t, 3)
	fillGroup(t, a, 1, 50)
	data, err := a.SnapshotGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(data); i += 7 {
		bad := bytes.Clone(data)
		bad[i] ^= 0x40
		if err := b.RestoreGroup(1, bad); err == nil {
			t.Fatalf("byte %d flipped: restored", i)
		}
	}
	if len(b.TableSnapshot(1)) == 0 || !bytes.Equal(b.TableSnapshot(1), snapServer(t, 3).TableSnapshot(1)) {
		t.Fatal("refused snapshots changed the table")
	}
	if err := b.RestoreGroup(1, data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.TableSnapshot(1), b.TableSnapshot(1)) {
		t.Fatal("the restored table differs")
	}
	if !bytes.Equal(b.TableSnapshot(0), snapServer(t, 3).TableSnapshot(0)) {
		t.Fatal("group 0 changed")
	}
	now := time.Now()
	ma, ea := a.elector.Master(1, now)
	mb, eb := b.elector.Master(1, now)
	if ma != 2 || mb != ma || ea != eb {
		t.Fatalf("master %d epoch %d restored, want %d epoch %d", mb, eb, ma, ea)
	}
	b.sessions.mu.Lock()
	n := len(b.sessions.group(1).entries)
	b.sessions.mu.Unlock()
	if n != 10 {
		t.Fatalf("the session clock tracks %d sessions after the restore, want 10", n)
	}
}

// FuzzDecodeGroupSnapshot: the decoder never panics and what it takes
// encodes back to the same bytes.
func FuzzDecodeGroupSnapshot(f *testing.F) {
	s := snapServer(f, 1)
	fillGroup(f, s, 0, 3)
	data, _ := s.SnapshotGroup(0)
	f.Add(data)
	f.Add(encodeGroupSnapshot(nil, nil, 0))
	f.Add(encodeGroupSnapshot(nil, nil, flagFloorPending))
	f.Add([]byte("LKGS\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		table, elect, flags, err := decodeGroupSnapshot(b)
		if err != nil {
			if !errors.Is(err, ErrBadGroupSnapshot) {
				t.Fatalf("error %v does not wrap ErrBadGroupSnapshot", err)
			}
			return
		}
		if again := encodeGroupSnapshot(table, elect, flags); !bytes.Equal(again, b) {
			t.Fatalf("%x re-encodes to %x", b, again)
		}
	})
}

// BenchmarkGroupSnapshot100k measures snapshot and restore of a group of
// 100,000 locks (held by 10 sessions), and reports the snapshot's size.
func BenchmarkGroupSnapshot100k(b *testing.B) {
	s, data := bigGroup(b, 100_000)
	lim := s.groups[0].table.Limits()
	b.ReportMetric(float64(len(data)), "bytes")
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.SnapshotGroup(0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(data))/1e6, "MB")
	})
	// capture is what runs on the replica's goroutine (the rest, encode,
	// runs beside it): the loop's stall per snapshot.
	b.Run("capture", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.CaptureGroup(0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("restore", func(b *testing.B) {
		r := snapServer(b, 2)
		r.groups[0].table = lease.New(lim)
		for b.Loop() {
			if err := r.RestoreGroup(0, data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// bigGroup is a one-node server whose group 0 holds n locks (held by 10
// sessions), with that group's snapshot.
func bigGroup(b *testing.B, n int) (*Server, []byte) {
	s := snapServer(b, 1)
	lim := lease.DefaultLimits()
	lim.MaxLocksPerSession = 1 << 20
	s.groups[0].table = lease.New(lim)
	fillGroup(b, s, 0, n)
	data, err := s.SnapshotGroup(0)
	if err != nil {
		b.Fatal(err)
	}
	return s, data
}
