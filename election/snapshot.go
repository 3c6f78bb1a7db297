package election

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Group snapshots (issue 11). A group's snapshot carries the election state
// that the group's log decides: the last lease command applied (the master
// lease, or the release that ended it), where the next command may come,
// the master and change count by the log, and the epoch of the last change
// announced. It also carries the leases of other holders that the node
// which took it still waited out, each with the time it had left.
//
// A node that restores a snapshot counts every lease in it as learned at the
// moment of the restore, as a node that replays its log after a restart
// counts every lease it finds: that errs on the safe side, since the holder
// counts its own lease from when it sent it. So after a restore the node
// knows the master, Seq and Epoch exactly as a node that applied the log, and
// never believes a lease over before a node that applied the log would.

const (
	snapMagic   = "ELSG"
	snapVersion = 1
	// maxSnapHeld bounds the held leases in a snapshot (a group has at
	// most one per holder and incarnation still in force; more is junk).
	maxSnapHeld = 64
	// MaxGroupSnapshot bounds the size of one group's election snapshot.
	MaxGroupSnapshot = 4 + 1 + 1 + 3*binary.MaxVarintLen64 + leaseCmdSize + 6*binary.MaxVarintLen64 + maxSnapHeld*4*binary.MaxVarintLen64 + 4
)

// ErrBadSnapshot wraps every reason an election snapshot is refused.
var ErrBadSnapshot = errors.New("election: bad group snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// groupSnap is the decoded form of a group snapshot.
type groupSnap struct {
	set       bool
	slot      uint64
	cmd       LeaseCmd
	next      uint64
	logMaster paxos.NodeID
	seq       uint64
	epoch     uint64
	cause     Cause
	to        paxos.NodeID
	held      []snapHeld
}

type snapHeld struct {
	holder   paxos.NodeID
	inc, ctr uint32
	left     time.Duration
}

// SnapshotGroup returns group g's election state at now (see above), for
// RestoreGroup on this node or another. Call it between two Applied calls
// of the group, as the replica does.
func (e *Elector) SnapshotGroup(g paxos.GroupID, now time.Time) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return nil, err
	}
	s := groupSnap{set: gr.cur.set, slot: gr.cur.slot, cmd: gr.cur.cmd, next: gr.next, logMaster: gr.logMaster, seq: gr.seq}
	if s.set {
		s.epoch, s.cause, s.to = logEvent(gr)
	}
	hs := slices.Clone(gr.held)
	slices.SortFunc(hs, func(a, b held) int { return b.until.Compare(a.until) })
	for _, h := range hs {
		left := h.until.Sub(now)
		if left <= 0 || len(s.held) == maxSnapHeld {
			break
		}
		s.held = append(s.held, snapHeld{holder: h.holder, inc: h.inc, ctr: h.ctr, left: min(left, MaxLeaseDuration)})
	}
	return s.encode(), nil
}

// logEvent returns the epoch, cause and handover target of the last master
// change of g's log that this node announced: the lease that made the
// master (renewals announce nothing) or the release. An expiry this node
// announced since, by its own clock, is not the log's.
func logEvent(g *group) (uint64, Cause, paxos.NodeID) {
	if ev := g.ev; ev.seq == g.seq && (ev.cause == CauseLease || ev.cause == CauseReleased || ev.cause == CauseRenewed) {
		return ev.epoch, ev.cause, g.ev.current(g.id).To
	}
	for i := len(g.ev.hist) - 1; i >= 0; i-- {
		if ev := g.ev.hist[i]; ev.Seq == g.seq && (ev.Cause == CauseLease || ev.Cause == CauseReleased) {
			return ev.Epoch, ev.Cause, ev.To
		}
	}
	// The history no longer holds it (or the change predates this node's
	// events): the last command's own epoch, a little later, is as good.
	if g.cur.cmd.Release {
		return epochOf(g.cur.slot, kindRelease), CauseReleased, g.cur.cmd.To
	}
	return epochOf(g.cur.slot, kindLease), CauseLease, 0
}

func (s *groupSnap) encode() []byte {
	b := make([]byte, 0, 64+leaseCmdSize+len(s.held)*24)
	b = append(b, snapMagic...)
	b = append(b, snapVersion)
	if s.set {
		b = append(b, 1)
		b = binary.AppendUvarint(b, s.slot)
		b = append(b, s.cmd.Encode()...)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, s.next)
	b = binary.AppendUvarint(b, uint64(s.logMaster))
	b = binary.AppendUvarint(b, s.seq)
	b = binary.AppendUvarint(b, s.epoch)
	b = append(b, byte(s.cause))
	b = binary.AppendUvarint(b, uint64(s.to))
	b = binary.AppendUvarint(b, uint64(len(s.held)))
	for _, h := range s.held {
		b = binary.AppendUvarint(b, uint64(h.holder))
		b = binary.AppendUvarint(b, uint64(h.inc))
		b = binary.AppendUvarint(b, uint64(h.ctr))
		b = binary.AppendUvarint(b, uint64(h.left))
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeGroupSnap checks and decodes a group snapshot; it allocates no more
// than maxSnapHeld held leases whatever b says.
func decodeGroupSnap(b []byte) (*groupSnap, error) {
	bad := func(format string, args ...any) (*groupSnap, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
	}
	if len(b) > MaxGroupSnapshot {
		return bad("%d bytes, at most %d", len(b), MaxGroupSnapshot)
	}
	if len(b) < len(snapMagic)+1+4 || string(b[:len(snapMagic)]) != snapMagic {
		return bad("not an election snapshot (%d bytes)", len(b))
	}
	if v := b[len(snapMagic)]; v != snapVersion {
		return bad("version %d, this build reads %d", v, snapVersion)
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return bad("checksum mismatch: the snapshot is damaged")
	}
	p := body[len(snapMagic)+1:]
	ok := true
	uv := func(limit uint64) uint64 {
		v, n := binary.Uvarint(p)
		if n <= 0 || v > limit {
			ok = false
			return 0
		}
		p = p[n:]
		return v
	}
	byteAt := func() byte {
		if len(p) == 0 {
			ok = false
			return 0
		}
		c := p[0]
		p = p[1:]
		return c
	}
	s := &groupSnap{}
	switch byteAt() {
	case 0:
	case 1:
		s.set = true
		s.slot = uv(1<<63 - 2)
		if len(p) < leaseCmdSize {
			return bad("truncated lease command")
		}
		cmd, err := DecodeLeaseCmd(p[:leaseCmdSize])
		if err != nil {
			return bad("lease command: %v", err)
		}
		s.cmd = cmd
		p = p[leaseCmdSize:]
	default:
		return bad("bad flags")
	}
	s.next = uv(1<<63 - 1)
	s.logMaster = paxos.NodeID(uv(1<<32 - 1))
	s.seq = uv(1<<63 - 1)
	s.epoch = uv(1<<63 - 1)
	s.cause = Cause(byteAt())
	s.to = paxos.NodeID(uv(1<<32 - 1))
	n := uv(maxSnapHeld)
	for range n {
		if !ok {
			break
		}
		h := snapHeld{holder: paxos.NodeID(uv(1<<32 - 1)), inc: uint32(uv(1<<32 - 1)), ctr: uint32(uv(1<<32 - 1)), left: time.Duration(uv(uint64(MaxLeaseDuration)))}
		s.held = append(s.held, h)
	}
	switch {
	case !ok:
		return bad("malformed or out-of-range field")
	case len(p) != 0:
		return bad("%d bytes after the end", len(p))
	case s.cause > CauseRenewed:
		return bad("unknown cause %d", s.cause)
	case s.set && s.next < s.slot+1:
		return bad("next slot %d below the last command's slot %d", s.next, s.slot)
	case s.set && !s.cmd.Release && s.logMaster != s.cmd.Holder:
		return bad("master %d but the last lease is %d's", s.logMaster, s.cmd.Holder)
	case s.set && s.cmd.Release && s.logMaster != 0:
		return bad("master %d after a release", s.logMaster)
	case !s.set && (s.logMaster != 0 || s.seq != 0 || s.epoch != 0):
		return bad("a master or changes without any lease command")
	case s.set && (s.epoch == 0 || s.epoch > epochOf(s.slot+1, kindLease)):
		return bad("epoch %d does not fit the last command's slot %d", s.epoch, s.slot)
	}
	return s, nil
}

// CheckGroupSnapshot reports whether b is a group snapshot RestoreGroup
// would take, without changing anything.
func CheckGroupSnapshot(b []byte) error {
	_, err := decodeGroupSnap(b)
	return err
}

// RestoreGroup replaces group g's election state with the snapshot b, as if
// this node had applied the group's log up to it at now (see above). On an
// error nothing changes. A snapshot whose last lease command is the one this
// node applied last changes only where the next command may come: this
// node's own count of that lease stays, being at least as good.
//
// Subscribers get the restored state as one event (its Seq may jump: the
// changes in between are not known here), and a reader that resumes from
// an epoch below it is told to resync.
func (e *Elector) RestoreGroup(g paxos.GroupID, b []byte, now time.Time) error {
	s, err := decodeGroupSnap(b)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	gr, err := e.group(g)
	if err != nil {
		return err
	}
	if gr.cur.set == s.set && gr.cur.slot == s.slot && gr.cur.cmd == s.cmd && gr.seq == s.seq {
		gr.next = max(gr.next, s.next)
		return nil
	}
	gr.cur = current{set: s.set, slot: s.slot, cmd: s.cmd, learned: now}
	gr.next = s.next
	gr.logMaster, gr.seq = s.logMaster, s.seq
	gr.givenUp = false
	gr.held = gr.held[:0]
	for _, h := range s.held {
		gr.hold(held{holder: h.holder, inc: h.inc, ctr: h.ctr, until: now.Add(h.left)})
	}
	if gr.cur.lease() {
		// Ours or not, its send time is not known here: wait it out.
		gr.hold(held{holder: s.cmd.Holder, inc: incarnation(s.cmd.Nonce), ctr: counter(s.cmd.Nonce), until: gr.cur.expiry()})
		delete(gr.sent, s.cmd.Nonce)
	}
	gr.freeAt = now
	for _, h := range gr.held {
		if h.until.After(gr.freeAt) {
			gr.freeAt = h.until
		}
	}
	if len(gr.held) > 0 || (s.set && s.cmd.Release) {
		gr.othersUntil = laterOf(gr.othersUntil, gr.freeAt)
	}
	if s.epoch > gr.ev.epoch {
		// The history between what this node announced and the snapshot
		// is unknown here: a reader resuming from before it must resync.
		gr.ev.hist = gr.ev.hist[:0]
		gr.ev.trimmed = s.epoch
		e.emit(gr, Event{Group: g, Epoch: s.epoch, Seq: s.seq, Master: s.logMaster, Cause: s.cause, To: s.to})
	}
	return nil
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
