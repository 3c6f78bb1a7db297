package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/internal/ratelog"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/quicnet"
)

// Snapshot transfer between peers (issue 11, field report F4), the
// replica.SnapshotFetcher of a node.
//
// The receiver drives every transfer: it picks one peer and names the
// transfer with a random 64-bit id, then pulls the snapshot in chunks by
// offset, keeping at most snapWindow chunks requested ahead of what it has.
// Each chunk carries the transfer id, group, snapshot slot, offset, total
// size, the CRC-32C of the whole snapshot, its bytes, and its own CRC-32C.
// The receiver refuses chunks of any other transfer (or from another peer),
// duplicates, out-of-order chunks, and chunks whose checksum fails; a chunk
// that disagrees with the first one on slot, size or whole checksum, or a
// whole snapshot whose checksum fails, ends the transfer. A transfer with
// no accepted chunk for snapStall is abandoned. An ended transfer is tried
// again, under a new id, from the next peer (the one the core named first,
// then the others), until the fetch's context ends; the replica verifies
// what comes back before anything is written (replica.install).
//
// The sender serves from its store's newest snapshot, whose bytes it keeps
// per group while transfers use them, so a chunk request does not reload
// it. A request for a snapshot that is no longer the one kept (a newer one
// was loaded for another transfer) is answered "gone", and the receiver
// starts over. At most snapServeMax transfers are served at once; more are
// answered "busy". Snapshot frames travel on a lane (QUIC stream) of their
// own, snapLane, so a transfer never delays Paxos messages.

// snapMarker starts a snapshot frame on the peer mesh (batchMarker and
// helloMarker start others; a Paxos message starts with its codec version).
const snapMarker = 0xfd

// snapLane is the lane of snapshot frames: past the lanes peerTransport
// uses (quicnet.DefaultLanes), so the mesh is set up with one more.
const snapLane = quicnet.DefaultLanes

// Frame kinds.
const (
	snapRequest = 1
	snapChunk   = 2
	snapRefuse  = 3
)

// Why a sender refuses.
const (
	refuseNone = 1 // no snapshot at or above the slot asked for
	refuseBusy = 2 // serving snapServeMax transfers already
	refuseGone = 3 // the snapshot of the transfer is no longer the one kept
	refuseBad  = 4 // an unknown transfer, or a request that makes no sense
)

func refuseReason(r byte) string {
	switch r {
	case refuseNone:
		return "the peer has no snapshot that recent"
	case refuseBusy:
		return "the peer serves as many transfers as it may"
	case refuseGone:
		return "the peer's snapshot moved on"
	case refuseBad:
		return "the peer does not know the transfer"
	}
	return fmt.Sprintf("refusal %d", r)
}

// Sizes and bounds.
const (
	snapChunkSize = 256 << 10
	maxSnapChunk  = 1 << 20 // the largest chunk a receiver takes
	snapWindow    = 4       // chunks requested ahead
	maxSnapCount  = 16      // chunks one request may ask for
	snapServeMax  = 4
	snapServeIdle = 10 * time.Second
	// snapStall is how long a receiver waits for the next chunk.
	snapStall = 5 * time.Second
	// snapRetryPause separates two attempts at the same peer.
	snapRetryPause = 200 * time.Millisecond

	snapRequestLen = 2 + 8 + 4 + 8 + 8 + 8 + 4 + 4
	snapChunkHdr   = 2 + 8 + 4 + 8 + 8 + 8 + 4 + 4
	snapRefuseLen  = 2 + 8 + 4 + 1 + 8
)

// snapFrame is a decoded snapshot frame; which fields count depends on kind.
type snapFrame struct {
	kind  byte
	xfer  uint64
	group paxos.GroupID
	slot  uint64 // request: the transfer's snapshot slot (0 to begin)
	// request
	minSlot uint64
	offset  uint64
	count   uint32
	size    uint32
	// chunk
	total uint64
	sum   uint32 // CRC-32C of the whole snapshot
	data  []byte // aliases the frame
	// refusal
	reason byte
}

var errChunkCRC = errors.New("chunk checksum mismatch")

func appendSnapRequest(b []byte, f *snapFrame) []byte {
	b = append(b, snapMarker, snapRequest)
	b = binary.BigEndian.AppendUint64(b, f.xfer)
	b = binary.BigEndian.AppendUint32(b, uint32(f.group))
	b = binary.BigEndian.AppendUint64(b, f.minSlot)
	b = binary.BigEndian.AppendUint64(b, f.slot)
	b = binary.BigEndian.AppendUint64(b, f.offset)
	b = binary.BigEndian.AppendUint32(b, f.count)
	return binary.BigEndian.AppendUint32(b, f.size)
}

func appendSnapChunk(b []byte, f *snapFrame) []byte {
	start := len(b)
	b = append(b, snapMarker, snapChunk)
	b = binary.BigEndian.AppendUint64(b, f.xfer)
	b = binary.BigEndian.AppendUint32(b, uint32(f.group))
	b = binary.BigEndian.AppendUint64(b, f.slot)
	b = binary.BigEndian.AppendUint64(b, f.offset)
	b = binary.BigEndian.AppendUint64(b, f.total)
	b = binary.BigEndian.AppendUint32(b, f.sum)
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.data)))
	b = append(b, f.data...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

func appendSnapRefuse(b []byte, f *snapFrame) []byte {
	b = append(b, snapMarker, snapRefuse)
	b = binary.BigEndian.AppendUint64(b, f.xfer)
	b = binary.BigEndian.AppendUint32(b, uint32(f.group))
	b = append(b, f.reason)
	return binary.BigEndian.AppendUint64(b, f.slot)
}

// decodeSnapFrame checks a snapshot frame's sizes, bounds and checksum. A
// chunk whose checksum fails comes back with its header and errChunkCRC, so
// that the receiver can tell which transfer it broke.
func decodeSnapFrame(b []byte) (snapFrame, error) {
	var f snapFrame
	if len(b) < 2 || b[0] != snapMarker {
		return f, errors.New("not a snapshot frame")
	}
	f.kind = b[1]
	p := b[2:]
	u64 := func() uint64 { v := binary.BigEndian.Uint64(p); p = p[8:]; return v }
	u32 := func() uint32 { v := binary.BigEndian.Uint32(p); p = p[4:]; return v }
	switch f.kind {
	case snapRequest:
		if len(b) != snapRequestLen {
			return f, fmt.Errorf("snapshot request of %d bytes, want %d", len(b), snapRequestLen)
		}
		f.xfer, f.group, f.minSlot, f.slot, f.offset, f.count, f.size = u64(), paxos.GroupID(u32()), u64(), u64(), u64(), u32(), u32()
		if f.xfer == 0 || f.count == 0 || f.count > maxSnapCount || f.size == 0 || f.size > maxSnapChunk || f.offset > MaxGroupSnapshot {
			return f, errors.New("snapshot request out of bounds")
		}
	case snapChunk:
		if len(b) < snapChunkHdr+4 || len(b) > snapChunkHdr+maxSnapChunk+4 {
			return f, fmt.Errorf("snapshot chunk of %d bytes, want %d to %d", len(b), snapChunkHdr+4, snapChunkHdr+maxSnapChunk+4)
		}
		f.xfer, f.group, f.slot, f.offset, f.total, f.sum = u64(), paxos.GroupID(u32()), u64(), u64(), u64(), u32()
		n := u32()
		if uint64(n) != uint64(len(b)-snapChunkHdr-4) {
			return f, fmt.Errorf("snapshot chunk says %d bytes, holds %d", n, len(b)-snapChunkHdr-4)
		}
		f.data = p[:n]
		if crc32.Checksum(b[:len(b)-4], castagnoli) != binary.BigEndian.Uint32(b[len(b)-4:]) {
			return f, errChunkCRC
		}
		if f.xfer == 0 || f.total > MaxGroupSnapshot || f.offset > f.total || uint64(n) > f.total-f.offset || (n == 0 && f.total != 0) {
			return f, errors.New("snapshot chunk out of bounds")
		}
	case snapRefuse:
		if len(b) != snapRefuseLen {
			return f, fmt.Errorf("snapshot refusal of %d bytes, want %d", len(b), snapRefuseLen)
		}
		f.xfer, f.group = u64(), paxos.GroupID(u32())
		f.reason = p[0]
		p = p[1:]
		f.slot = u64()
	default:
		return f, fmt.Errorf("unknown snapshot frame kind %d", f.kind)
	}
	return f, nil
}

// snapSource is what a sender serves from (pebblestore.Store).
type snapSource interface {
	LoadSnapshot(g paxos.GroupID) (uint64, []byte, error)
}

// snapStats counts what the transfers did, for tests and logs.
type snapStats struct {
	started, done, abandoned atomic.Int64
	// Refused chunks, by reason.
	otherXfer, duplicate, outOfOrder, badCRC, badWhole atomic.Int64
	// Sender side.
	served, busy, gone atomic.Int64
	chunksSent         atomic.Int64
}

// snapXfer is a node's side of snapshot transfers, as receiver and sender.
type snapXfer struct {
	self paxos.NodeID
	// peers is every other member (setPeers); guarded by mu.
	peers []paxos.NodeID
	send  func(to paxos.NodeID, frame []byte) error
	store snapSource
	log   *slog.Logger
	// warn rate-limits the warnings a peer can repeat at will (malformed
	// frames, chunks that cannot be queued), per peer.
	warn  *ratelog.Limiter
	stall time.Duration

	// node is the mesh the default send uses, once it listens.
	node atomic.Pointer[quicnet.Node]

	// chunkHook, when set (tests), sees every chunk frame a sender is
	// about to send, and may change it or drop it (false).
	chunkHook func(to paxos.NodeID, f *snapFrame, frame []byte) bool

	mu      sync.Mutex
	recv    map[uint64]*incoming
	serving map[uint64]*outgoing
	cache   map[paxos.GroupID]*servedSnap
	stats   snapStats
}

// incoming is a transfer this node receives.
type incoming struct {
	id      uint64
	from    paxos.NodeID
	group   paxos.GroupID
	minSlot uint64
	started bool // the first chunk came: slot, total and sum are set
	slot    uint64
	total   uint64
	sum     uint32
	buf     []byte
	reqEnd  uint64 // chunks are requested up to here
	last    time.Time
	end     chan error // one value: nil when buf holds the whole snapshot
	ended   bool
}

// outgoing is a transfer this node serves.
type outgoing struct {
	to    paxos.NodeID
	group paxos.GroupID
	slot  uint64
	last  time.Time
}

// servedSnap is the snapshot of a group being served.
type servedSnap struct {
	slot uint64
	data []byte
	sum  uint32
}

// newSnapXfer returns a node's snapshot transfers. With send nil, frames
// go over the mesh set with setNode, on snapLane.
func newSnapXfer(self paxos.NodeID, peers []paxos.NodeID, send func(paxos.NodeID, []byte) error, store snapSource, log *slog.Logger) *snapXfer {
	x := &snapXfer{self: self, peers: slices.DeleteFunc(slices.Clone(peers), func(n paxos.NodeID) bool { return n == self }),
		send: send, store: store, log: log, warn: ratelog.New(10 * time.Second), stall: snapStall,
		recv: map[uint64]*incoming{}, serving: map[uint64]*outgoing{}, cache: map[paxos.GroupID]*servedSnap{}}
	if x.send == nil {
		x.send = x.sendOnMesh
	}
	return x
}

// setPeers replaces the nodes snapshots are fetched from: the members as
// the logs say (members.go), without this node.
func (x *snapXfer) setPeers(ids []paxos.NodeID) {
	others := slices.DeleteFunc(slices.Clone(ids), func(n paxos.NodeID) bool { return n == x.self })
	x.mu.Lock()
	x.peers = others
	x.mu.Unlock()
}

// stallTime is how long a transfer may go without a chunk.
func (x *snapXfer) stallTime() time.Duration {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.stall
}

// setNode makes the default send use n.
func (x *snapXfer) setNode(n *quicnet.Node) { x.node.Store(n) }

func (x *snapXfer) sendOnMesh(to paxos.NodeID, frame []byte) error {
	n := x.node.Load()
	if n == nil {
		return errors.New("the peer mesh is not up yet")
	}
	return n.Send(quicnet.NodeID(to), snapLane, frame)
}

// errSnapGone is a transfer whose snapshot moved on at the sender.
var errSnapGone = errors.New("the sender's snapshot moved on")

// FetchSnapshot implements replica.SnapshotFetcher: from the peer the core
// named first, then from the others in turn, until one transfer completes
// or ctx ends.
func (x *snapXfer) FetchSnapshot(ctx context.Context, from paxos.NodeID, g paxos.GroupID, minSlot uint64) (uint64, []byte, error) {
	order := []paxos.NodeID{from}
	x.mu.Lock()
	others := slices.DeleteFunc(slices.Clone(x.peers), func(n paxos.NodeID) bool { return n == from })
	x.mu.Unlock()
	rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	order = append(order, others...)
	var errs []error
	for i := 0; ctx.Err() == nil; i++ {
		peer := order[i%len(order)]
		if i > 0 && i%len(order) == 0 {
			// Every peer was tried: pause before the next round.
			select {
			case <-ctx.Done():
			case <-time.After(x.stallTime()):
			}
		}
		for tries := 0; tries < 3 && ctx.Err() == nil; tries++ {
			slot, data, err := x.fetchFrom(ctx, peer, g, minSlot)
			if err == nil {
				return slot, data, nil
			}
			errs = append(errs, fmt.Errorf("from node %d: %w", peer, err))
			if !errors.Is(err, errSnapGone) {
				break // another peer next
			}
			select {
			case <-ctx.Done():
			case <-time.After(snapRetryPause):
			}
		}
	}
	errs = append(errs, ctx.Err())
	return 0, nil, fmt.Errorf("snapshot of group %d: %w", g, errors.Join(errs...))
}

// fetchFrom runs one transfer from peer.
func (x *snapXfer) fetchFrom(ctx context.Context, peer paxos.NodeID, g paxos.GroupID, minSlot uint64) (uint64, []byte, error) {
	id := rand.Uint64() | 1
	in := &incoming{id: id, from: peer, group: g, minSlot: minSlot, reqEnd: snapWindow * snapChunkSize, last: time.Now(), end: make(chan error, 1)}
	x.mu.Lock()
	x.recv[id] = in
	x.mu.Unlock()
	defer func() {
		x.mu.Lock()
		delete(x.recv, id)
		x.mu.Unlock()
	}()
	x.stats.started.Add(1)
	start := time.Now()
	x.log.Info("snapshot transfer started", "group", g, "from", peer, "transfer", fmt.Sprintf("%016x", id), "min_slot", minSlot)
	abandon := func(reason error) (uint64, []byte, error) {
		x.mu.Lock()
		in.ended = true
		got, total := len(in.buf), in.total
		x.mu.Unlock()
		x.stats.abandoned.Add(1)
		x.log.Info("snapshot transfer abandoned", "group", g, "from", peer, "transfer", fmt.Sprintf("%016x", id),
			"bytes", got, "of", total, "after", time.Since(start).Round(time.Millisecond).String(), "reason", reason)
		return 0, nil, reason
	}
	req := snapFrame{xfer: id, group: g, minSlot: minSlot, count: snapWindow, size: snapChunkSize}
	if err := x.send(peer, appendSnapRequest(nil, &req)); err != nil {
		return abandon(fmt.Errorf("send the request: %w", err))
	}
	stall := x.stallTime()
	tick := time.NewTicker(max(stall/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return abandon(ctx.Err())
		case err := <-in.end:
			if err != nil {
				return abandon(err)
			}
			took := time.Since(start)
			x.stats.done.Add(1)
			x.log.Info("snapshot transfer done", "group", g, "from", peer, "transfer", fmt.Sprintf("%016x", id), "slot", in.slot,
				"bytes", len(in.buf), "took", took.Round(time.Millisecond).String(),
				"MB_per_s", fmt.Sprintf("%.1f", float64(len(in.buf))/1e6/max(took.Seconds(), 1e-6)))
			return in.slot, in.buf, nil
		case <-tick.C:
			x.mu.Lock()
			idle := time.Since(in.last)
			x.mu.Unlock()
			if idle >= stall {
				return abandon(fmt.Errorf("stalled: no chunk for %v", idle.Round(time.Millisecond)))
			}
		}
	}
}

// onFrame handles a snapshot frame from peer. It runs on the mesh's
// goroutine of the snapshot lane of that peer and never blocks for long.
func (x *snapXfer) onFrame(peer paxos.NodeID, b []byte) {
	f, err := decodeSnapFrame(b)
	if errors.Is(err, errChunkCRC) {
		x.stats.badCRC.Add(1)
		x.endIncoming(peer, f.xfer, fmt.Errorf("a chunk at offset %d failed its checksum", f.offset))
		return
	}
	if err != nil {
		x.warn.Warn(x.log, fmt.Sprintf("malformed/%d", peer), "dropped a malformed snapshot frame", "from", peer, "err", err)
		return
	}
	switch f.kind {
	case snapRequest:
		x.serve(peer, &f)
	case snapChunk:
		x.onChunk(peer, &f)
	case snapRefuse:
		reason := errors.New(refuseReason(f.reason))
		if f.reason == refuseGone {
			reason = errSnapGone
		}
		x.endIncoming(peer, f.xfer, reason)
	}
}

// endIncoming ends transfer id from peer with err, if it runs.
func (x *snapXfer) endIncoming(peer paxos.NodeID, id uint64, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	in := x.recv[id]
	if in == nil || in.from != peer || in.ended {
		x.stats.otherXfer.Add(1)
		return
	}
	in.finish(err)
}

func (in *incoming) finish(err error) {
	in.ended = true
	in.end <- err
}

// onChunk takes a chunk of a transfer this node runs, if it is the next one.
func (x *snapXfer) onChunk(peer paxos.NodeID, f *snapFrame) {
	x.mu.Lock()
	defer x.mu.Unlock()
	in := x.recv[f.xfer]
	switch {
	case in == nil || in.from != peer || in.group != f.group:
		x.stats.otherXfer.Add(1)
		return
	case in.ended:
		x.stats.duplicate.Add(1)
		return
	case !in.started && f.offset != 0:
		x.stats.outOfOrder.Add(1)
		return
	case !in.started:
		if f.slot < in.minSlot {
			in.finish(fmt.Errorf("the peer sent a snapshot at slot %d, below %d", f.slot, in.minSlot))
			return
		}
		in.started, in.slot, in.total, in.sum = true, f.slot, f.total, f.sum
		in.buf = make([]byte, 0, min(f.total, 64<<20))
	case f.slot != in.slot || f.total != in.total || f.sum != in.sum:
		in.finish(fmt.Errorf("a chunk of slot %d, %d bytes, disagrees with the transfer's first (slot %d, %d bytes)", f.slot, f.total, in.slot, in.total))
		return
	case f.offset < uint64(len(in.buf)):
		x.stats.duplicate.Add(1)
		return
	case f.offset > uint64(len(in.buf)):
		x.stats.outOfOrder.Add(1)
		return
	}
	in.buf = append(in.buf, f.data...)
	in.last = time.Now()
	if uint64(len(in.buf)) == in.total {
		if crc32.Checksum(in.buf, castagnoli) != in.sum {
			x.stats.badWhole.Add(1)
			in.finish(errors.New("the whole snapshot failed its checksum"))
			return
		}
		in.finish(nil)
		return
	}
	if in.reqEnd < in.total {
		req := snapFrame{xfer: in.id, group: in.group, minSlot: in.minSlot, slot: in.slot, offset: in.reqEnd, count: 1, size: snapChunkSize}
		in.reqEnd += snapChunkSize
		if err := x.send(peer, appendSnapRequest(nil, &req)); err != nil {
			in.finish(fmt.Errorf("send a request: %w", err))
		}
	}
}

// serve answers a chunk request: the first of a transfer (slot 0 and offset
// 0) picks the newest snapshot; the next ones must name it.
func (x *snapXfer) serve(peer paxos.NodeID, f *snapFrame) {
	x.mu.Lock()
	defer x.mu.Unlock()
	now := time.Now()
	x.sweep(now)
	refuse := func(reason byte, slot uint64) {
		r := snapFrame{xfer: f.xfer, group: f.group, reason: reason, slot: slot}
		_ = x.send(peer, appendSnapRefuse(nil, &r))
	}
	out := x.serving[f.xfer]
	if f.slot == 0 {
		if out != nil {
			return // a duplicate of a begin: its chunks are on their way
		}
		if f.offset != 0 {
			refuse(refuseBad, 0)
			return
		}
		if len(x.serving) >= snapServeMax {
			x.stats.busy.Add(1)
			refuse(refuseBusy, 0)
			return
		}
		snap, err := x.newest(f.group)
		if err != nil {
			x.log.Error("cannot serve a snapshot", "group", f.group, "to", peer, "err", err)
			refuse(refuseNone, 0)
			return
		}
		if snap == nil || snap.slot < f.minSlot {
			var slot uint64
			if snap != nil {
				slot = snap.slot
			}
			refuse(refuseNone, slot)
			return
		}
		out = &outgoing{to: peer, group: f.group, slot: snap.slot}
		x.serving[f.xfer] = out
		x.stats.served.Add(1)
		x.log.Info("serving a snapshot", "group", f.group, "to", peer, "transfer", fmt.Sprintf("%016x", f.xfer), "slot", snap.slot, "bytes", len(snap.data))
		time.AfterFunc(snapServeIdle+time.Second, func() {
			x.mu.Lock()
			x.sweep(time.Now())
			x.mu.Unlock()
		})
	}
	if out == nil || out.to != peer || out.group != f.group {
		refuse(refuseBad, 0)
		return
	}
	snap := x.cache[f.group]
	if snap == nil || snap.slot != out.slot || (f.slot != 0 && f.slot != out.slot) {
		x.stats.gone.Add(1)
		delete(x.serving, f.xfer)
		var slot uint64
		if snap != nil {
			slot = snap.slot
		}
		refuse(refuseGone, slot)
		return
	}
	out.last = now
	size := uint64(f.size)
	for i := uint64(0); i < uint64(f.count); i++ {
		off := f.offset + i*size
		if off >= uint64(len(snap.data)) && !(off == 0 && len(snap.data) == 0) {
			break
		}
		end := min(off+size, uint64(len(snap.data)))
		c := snapFrame{xfer: f.xfer, group: f.group, slot: snap.slot, offset: off, total: uint64(len(snap.data)), sum: snap.sum, data: snap.data[off:end]}
		frame := appendSnapChunk(make([]byte, 0, snapChunkHdr+len(c.data)+4), &c)
		if x.chunkHook != nil && !x.chunkHook(peer, &c, frame) {
			continue
		}
		if err := x.send(peer, frame); err != nil {
			x.warn.Warn(x.log, fmt.Sprintf("queue/%d", peer), "could not queue a snapshot chunk", "to", peer, "group", f.group, "err", err)
			return
		}
		x.stats.chunksSent.Add(1)
		if end == uint64(len(snap.data)) {
			delete(x.serving, f.xfer) // all sent
			x.dropUnused()
			break
		}
	}
}

// newest returns group g's snapshot to serve: the cached one, unless the
// store keeps a newer one. With x.mu held.
func (x *snapXfer) newest(g paxos.GroupID) (*servedSnap, error) {
	slot, data, err := x.store.LoadSnapshot(g)
	if err != nil {
		return nil, err
	}
	if slot == 0 {
		return x.cache[g], nil
	}
	if c := x.cache[g]; c != nil && c.slot >= slot {
		return c, nil
	}
	c := &servedSnap{slot: slot, data: data, sum: crc32.Checksum(data, castagnoli)}
	x.cache[g] = c
	return c, nil
}

// sweep forgets transfers idle for snapServeIdle, with x.mu held.
func (x *snapXfer) sweep(now time.Time) {
	for id, o := range x.serving {
		if now.Sub(o.last) > snapServeIdle {
			delete(x.serving, id)
			x.log.Info("stopped serving an idle snapshot transfer", "group", o.group, "to", o.to, "transfer", fmt.Sprintf("%016x", id))
		}
	}
	x.dropUnused()
}

// dropUnused forgets cached snapshots no transfer uses, with x.mu held.
func (x *snapXfer) dropUnused() {
	for g, c := range x.cache {
		used := false
		for _, o := range x.serving {
			if o.group == g && o.slot == c.slot {
				used = true
				break
			}
		}
		if !used {
			delete(x.cache, g)
		}
	}
}
