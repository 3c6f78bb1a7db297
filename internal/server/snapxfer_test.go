package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

// memSnaps is a snapSource in memory.
type memSnaps struct {
	mu    sync.Mutex
	slot  map[paxos.GroupID]uint64
	data  map[paxos.GroupID][]byte
	loads int
}

func (m *memSnaps) LoadSnapshot(g paxos.GroupID) (uint64, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loads++
	return m.slot[g], bytes.Clone(m.data[g]), nil
}

func (m *memSnaps) set(g paxos.GroupID, slot uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.slot[g], m.data[g] = slot, data
}

// xferNet links snapXfers in one process: every link (from, to) delivers
// its frames in order on a goroutine of its own, as a QUIC stream does,
// after its filter, which may change, drop, duplicate or add frames.
type xferNet struct {
	t      *testing.T
	nodes  map[paxos.NodeID]*snapXfer
	stores map[paxos.NodeID]*memSnaps
	mu     sync.Mutex
	links  map[[2]paxos.NodeID]chan []byte
	filter func(from, to paxos.NodeID, frame []byte) [][]byte
	wg     sync.WaitGroup
	done   chan struct{}
}

func newXferNet(t *testing.T, n int, stall time.Duration) *xferNet {
	xn := &xferNet{t: t, nodes: map[paxos.NodeID]*snapXfer{}, stores: map[paxos.NodeID]*memSnaps{},
		links: map[[2]paxos.NodeID]chan []byte{}, done: make(chan struct{})}
	var ids []paxos.NodeID
	for i := 1; i <= n; i++ {
		ids = append(ids, paxos.NodeID(i))
	}
	for _, id := range ids {
		st := &memSnaps{slot: map[paxos.GroupID]uint64{}, data: map[paxos.GroupID][]byte{}}
		xn.stores[id] = st
		x := newSnapXfer(id, ids, func(to paxos.NodeID, frame []byte) error { return xn.send(id, to, frame) }, st, discardLogger())
		x.stall = stall
		xn.nodes[id] = x
	}
	t.Cleanup(func() { close(xn.done); xn.wg.Wait() })
	return xn
}

func (xn *xferNet) send(from, to paxos.NodeID, frame []byte) error {
	xn.mu.Lock()
	defer xn.mu.Unlock()
	k := [2]paxos.NodeID{from, to}
	ch := xn.links[k]
	if ch == nil {
		ch = make(chan []byte, 1024)
		xn.links[k] = ch
		xn.wg.Add(1)
		go func() {
			defer xn.wg.Done()
			for {
				select {
				case <-xn.done:
					return
				case b := <-ch:
					xn.nodes[to].onFrame(from, b)
				}
			}
		}()
	}
	frames := [][]byte{frame}
	if xn.filter != nil {
		frames = xn.filter(from, to, frame)
	}
	for _, f := range frames {
		select {
		case ch <- f:
		default:
			return errors.New("link queue full")
		}
	}
	return nil
}

func (xn *xferNet) setFilter(f func(from, to paxos.NodeID, frame []byte) [][]byte) {
	xn.mu.Lock()
	defer xn.mu.Unlock()
	xn.filter = f
}

func randomSnapshot(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// isChunk reports whether frame is a chunk, and its offset.
func isChunk(frame []byte) (uint64, bool) {
	f, err := decodeSnapFrame(frame)
	if err != nil || f.kind != snapChunk {
		return 0, false
	}
	return f.offset, true
}

const hangGuard = 2 * time.Minute

func fetch(t *testing.T, x *snapXfer, from paxos.NodeID, minSlot uint64) (uint64, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	slot, data, err := x.FetchSnapshot(ctx, from, 0, minSlot)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return slot, data
}

// TestSnapXferTransfers: a snapshot of several chunks arrives whole, from
// the peer asked, with the sender reading its store once.
func TestSnapXferTransfers(t *testing.T) {
	xn := newXferNet(t, 3, time.Minute)
	want := randomSnapshot(5*snapChunkSize+123, 1)
	xn.stores[2].set(0, 50, want)
	slot, got := fetch(t, xn.nodes[1], 2, 40)
	if slot != 50 || !bytes.Equal(got, want) {
		t.Fatalf("got slot %d and %d bytes, want 50 and %d", slot, len(got), len(want))
	}
	st := &xn.nodes[1].stats
	if st.done.Load() != 1 || st.abandoned.Load() != 0 || xn.nodes[2].stats.served.Load() != 1 || xn.nodes[3].stats.served.Load() != 0 {
		t.Fatalf("done %d abandoned %d, served by 2: %d, by 3: %d", st.done.Load(), st.abandoned.Load(), xn.nodes[2].stats.served.Load(), xn.nodes[3].stats.served.Load())
	}
	if xn.stores[2].loads != 1 {
		t.Fatalf("the sender loaded its snapshot %d times for one transfer", xn.stores[2].loads)
	}
	xn.nodes[2].mu.Lock()
	left := len(xn.nodes[2].cache) + len(xn.nodes[2].serving)
	xn.nodes[2].mu.Unlock()
	if left != 0 {
		t.Fatalf("the sender keeps %d cached snapshots or transfers after the last chunk", left)
	}
}

// TestSnapXferRefusesOtherTransfers is field report F4: while node 2 sends,
// node 3 sends chunks too (of its own transfer id, and of the receiver's),
// and stray chunks of another id come from node 2: all are refused, and the
// snapshot is node 2's, whole.
func TestSnapXferRefusesOtherTransfers(t *testing.T) {
	xn := newXferNet(t, 3, time.Minute)
	want := randomSnapshot(3*snapChunkSize+7, 2)
	xn.stores[2].set(0, 50, want)
	xn.stores[3].set(0, 60, randomSnapshot(3*snapChunkSize+7, 3))
	var once sync.Once
	xn.setFilter(func(from, to paxos.NodeID, frame []byte) [][]byte {
		f, err := decodeSnapFrame(frame)
		if err != nil || f.kind != snapChunk || from != 2 || f.offset != snapChunkSize {
			return [][]byte{frame}
		}
		out := [][]byte{frame}
		once.Do(func() {
			// The same transfer id, from node 3.
			c := f
			c.slot, c.data = 60, []byte("node 3 overwrites")
			xn.nodes[1].onFrame(3, appendSnapChunk(nil, &c))
			// Another transfer id, from node 2.
			c = f
			c.xfer ^= 0xdead
			out = append(out, appendSnapChunk(nil, &c))
		})
		return out
	})
	slot, got := fetch(t, xn.nodes[1], 2, 40)
	if slot != 50 || !bytes.Equal(got, want) {
		t.Fatalf("got slot %d, %d bytes: not node 2's snapshot", slot, len(got))
	}
	if n := xn.nodes[1].stats.otherXfer.Load(); n != 2 {
		t.Fatalf("%d chunks of other transfers refused, want 2", n)
	}
}

// TestSnapXferRefusesDuplicates: every frame sent twice (requests and
// chunks, a begin included): the duplicates are refused, one transfer.
func TestSnapXferRefusesDuplicates(t *testing.T) {
	xn := newXferNet(t, 3, time.Minute)
	want := randomSnapshot(4*snapChunkSize+1, 4)
	xn.stores[2].set(0, 50, want)
	xn.setFilter(func(from, to paxos.NodeID, frame []byte) [][]byte { return [][]byte{frame, bytes.Clone(frame)} })
	_, got := fetch(t, xn.nodes[1], 2, 1)
	if !bytes.Equal(got, want) {
		t.Fatal("wrong snapshot")
	}
	if n := xn.nodes[1].stats.duplicate.Load(); n == 0 {
		t.Fatal("no duplicate refused")
	}
	if n := xn.nodes[2].stats.served.Load(); n != 1 {
		t.Fatalf("the sender served %d transfers for one begin sent twice", n)
	}
}

// TestSnapXferRefusesOutOfOrder: chunk 2 overtakes chunk 1 and chunk 1 is
// then lost: chunk 2 is refused, the transfer stalls, is abandoned, and the
// fetch succeeds from another peer.
func TestSnapXferRefusesOutOfOrder(t *testing.T) {
	xn := newXferNet(t, 3, time.Second)
	want := randomSnapshot(4*snapChunkSize, 5)
	xn.stores[2].set(0, 50, want)
	xn.stores[3].set(0, 50, want)
	var held []byte
	xn.setFilter(func(from, to paxos.NodeID, frame []byte) [][]byte {
		off, ok := isChunk(frame)
		switch {
		case !ok || from != 2:
			return [][]byte{frame}
		case off == snapChunkSize && held == nil:
			held = frame
			return nil
		case off == 2*snapChunkSize && held != nil:
			return [][]byte{frame} // chunk 1 never comes
		}
		return [][]byte{frame}
	})
	_, got := fetch(t, xn.nodes[1], 2, 1)
	if !bytes.Equal(got, want) {
		t.Fatal("wrong snapshot")
	}
	st := &xn.nodes[1].stats
	// As in TestSnapXferSenderDies, a busy machine may stall and abandon
	// a healthy transfer too: at least one abandon, not exactly one.
	if st.outOfOrder.Load() == 0 || st.abandoned.Load() < 1 || xn.nodes[3].stats.served.Load() < 1 {
		t.Fatalf("out of order %d, abandoned %d, served by node 3 %d", st.outOfOrder.Load(), st.abandoned.Load(), xn.nodes[3].stats.served.Load())
	}
}

// TestSnapXferRefusesCorruptChunk: a chunk changed on the way fails its
// checksum, ends the transfer, and another peer's succeeds.
func TestSnapXferRefusesCorruptChunk(t *testing.T) {
	xn := newXferNet(t, 3, time.Minute)
	want := randomSnapshot(3*snapChunkSize, 6)
	xn.stores[2].set(0, 50, want)
	xn.stores[3].set(0, 50, want)
	xn.setFilter(func(from, to paxos.NodeID, frame []byte) [][]byte {
		if off, ok := isChunk(frame); ok && from == 2 && off == snapChunkSize {
			bad := bytes.Clone(frame)
			bad[snapChunkHdr+100] ^= 1
			return [][]byte{bad}
		}
		return [][]byte{frame}
	})
	_, got := fetch(t, xn.nodes[1], 2, 1)
	if !bytes.Equal(got, want) {
		t.Fatal("wrong snapshot")
	}
	if st := &xn.nodes[1].stats; st.badCRC.Load() != 1 || st.abandoned.Load() != 1 {
		t.Fatalf("bad CRC %d, abandoned %d", st.badCRC.Load(), st.abandoned.Load())
	}
}

// TestSnapXferRefusesBadWholeChecksum: a sender whose chunks are sound but
// whose bytes are not the snapshot it vouched for (the whole checksum
// fails) is refused at the end.
func TestSnapXferRefusesBadWholeChecksum(t *testing.T) {
	xn := newXferNet(t, 3, time.Minute)
	want := randomSnapshot(2*snapChunkSize+5, 7)
	xn.stores[2].set(0, 50, want)
	xn.stores[3].set(0, 50, want)
	xn.nodes[2].chunkHook = func(to paxos.NodeID, f *snapFrame, frame []byte) bool {
		if f.offset == 0 {
			c := *f
			c.data = bytes.Clone(c.data)
			c.data[0] ^= 1
			copy(frame, appendSnapChunk(nil, &c))
		}
		return true
	}
	_, got := fetch(t, xn.nodes[1], 2, 1)
	if !bytes.Equal(got, want) {
		t.Fatal("wrong snapshot")
	}
	if st := &xn.nodes[1].stats; st.badWhole.Load() != 1 || st.done.Load() != 1 {
		t.Fatalf("bad whole %d, done %d", st.badWhole.Load(), st.done.Load())
	}
}

// TestSnapXferSenderDies: the sender stops after its first chunks; the
// receiver abandons the stalled transfer and gets the snapshot from
// another peer.
func TestSnapXferSenderDies(t *testing.T) {
	xn := newXferNet(t, 3, time.Second)
	want := randomSnapshot(6*snapChunkSize, 8)
	xn.stores[2].set(0, 50, want)
	xn.stores[3].set(0, 50, want)
	var mu sync.Mutex
	sent := 0
	xn.setFilter(func(from, to paxos.NodeID, frame []byte) [][]byte {
		mu.Lock()
		defer mu.Unlock()
		if from == 2 {
			if sent >= 2 {
				return nil // dead
			}
			sent++
		}
		return [][]byte{frame}
	})
	_, got := fetch(t, xn.nodes[1], 2, 1)
	if !bytes.Equal(got, want) {
		t.Fatal("wrong snapshot")
	}
	// At least the dead sender's transfer is abandoned; on a busy machine
	// a healthy transfer may also stall past the timeout and be abandoned
	// (and restarted): the count is not a promise, the outcome is.
	if st := &xn.nodes[1].stats; st.abandoned.Load() < 1 || st.done.Load() != 1 || xn.nodes[3].stats.served.Load() < 1 {
		t.Fatalf("abandoned %d done %d, served by node 3: %d", st.abandoned.Load(), st.done.Load(), xn.nodes[3].stats.served.Load())
	}
}

// TestSnapXferGoneRestarts: the sender's snapshot moves on mid-transfer (a
// newer one is loaded for another receiver): the first receiver is told
// "gone" and starts over, getting the newer snapshot.
func TestSnapXferGoneRestarts(t *testing.T) {
	xn := newXferNet(t, 4, time.Minute)
	old := randomSnapshot(8*snapChunkSize, 9)
	newer := randomSnapshot(8*snapChunkSize, 10)
	xn.stores[2].set(0, 50, old)
	var once sync.Once
	xn.nodes[2].chunkHook = func(to paxos.NodeID, f *snapFrame, frame []byte) bool {
		if to == 1 && f.offset == snapChunkSize {
			once.Do(func() {
				xn.stores[2].set(0, 90, newer)
				// Another node begins: the sender loads the newer one
				// (the hook runs with the sender's lock held).
				if _, err := xn.nodes[2].newest(0); err != nil {
					t.Error(err)
				}
			})
		}
		return true
	}
	slot, got := fetch(t, xn.nodes[1], 2, 1)
	if slot != 90 || !bytes.Equal(got, newer) {
		t.Fatalf("got slot %d, want the newer snapshot at 90", slot)
	}
	if n := xn.nodes[2].stats.gone.Load(); n != 1 {
		t.Fatalf("%d gone answers, want 1", n)
	}
}

// TestSnapXferRefusals: a sender without a recent enough snapshot, or
// busy, refuses; the receiver goes to another peer.
func TestSnapXferRefusals(t *testing.T) {
	xn := newXferNet(t, 3, time.Minute)
	want := randomSnapshot(100, 11)
	xn.stores[2].set(0, 10, []byte("too old"))
	xn.stores[3].set(0, 50, want)
	slot, got := fetch(t, xn.nodes[1], 2, 40)
	if slot != 50 || !bytes.Equal(got, want) {
		t.Fatalf("got slot %d", slot)
	}
	// Busy: node 3 serves snapServeMax stalled transfers already.
	x3 := xn.nodes[3]
	x3.mu.Lock()
	for i := range snapServeMax {
		x3.serving[uint64(i+1)] = &outgoing{to: 2, group: 0, slot: 50, last: time.Now()}
	}
	x3.mu.Unlock()
	xn.stores[2].set(0, 50, want)
	_, got = fetch(t, xn.nodes[1], 3, 40)
	if !bytes.Equal(got, want) || x3.stats.busy.Load() != 1 {
		t.Fatalf("busy refusals %d", x3.stats.busy.Load())
	}
}

// TestSnapXferStalledFetchFails: with no peer sending, the fetch ends with
// its context and says why.
func TestSnapXferStalledFetchFails(t *testing.T) {
	xn := newXferNet(t, 2, 100*time.Millisecond)
	xn.stores[2].set(0, 50, randomSnapshot(3*snapChunkSize, 12))
	xn.setFilter(func(from, to paxos.NodeID, frame []byte) [][]byte {
		if _, ok := isChunk(frame); ok {
			return nil
		}
		return [][]byte{frame}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _, err := xn.nodes[1].FetchSnapshot(ctx, 2, 0, 1)
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("err %v, want a stall", err)
	}
	if xn.nodes[1].stats.abandoned.Load() == 0 {
		t.Fatal("nothing abandoned")
	}
}

// FuzzDecodeSnapFrame: the decoder never panics, keeps its bounds, and what
// it takes encodes back to the same bytes.
func FuzzDecodeSnapFrame(f *testing.F) {
	f.Add(appendSnapRequest(nil, &snapFrame{xfer: 1, group: 2, minSlot: 3, slot: 4, offset: 5, count: 1, size: snapChunkSize}))
	f.Add(appendSnapChunk(nil, &snapFrame{xfer: 1, group: 2, slot: 4, offset: 0, total: 3, sum: 9, data: []byte("abc")}))
	f.Add(appendSnapRefuse(nil, &snapFrame{xfer: 1, group: 2, reason: refuseGone, slot: 7}))
	f.Add([]byte{snapMarker})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeSnapFrame(b)
		if err != nil {
			return
		}
		var again []byte
		switch fr.kind {
		case snapRequest:
			again = appendSnapRequest(nil, &fr)
		case snapChunk:
			if len(fr.data) > maxSnapChunk || fr.offset+uint64(len(fr.data)) > fr.total || fr.total > MaxGroupSnapshot {
				t.Fatalf("chunk out of bounds: %+v", fr)
			}
			again = appendSnapChunk(nil, &fr)
		case snapRefuse:
			again = appendSnapRefuse(nil, &fr)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, fr, again)
		}
	})
}

// A peer that sends malformed snapshot frames in a loop gets one warning
// per interval in the log, not one per frame.
func TestSnapXferMalformedFramesAreLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	x := newSnapXfer(1, []paxos.NodeID{1, 2}, func(paxos.NodeID, []byte) error { return nil }, nil, log)
	for range 5 {
		x.onFrame(2, []byte{snapMarker, 0xee, 1, 2, 3})
	}
	if n := strings.Count(buf.String(), "dropped a malformed snapshot frame"); n != 1 {
		t.Fatalf("%d warnings for 5 malformed frames from one peer, want 1:\n%s", n, buf.String())
	}
}
