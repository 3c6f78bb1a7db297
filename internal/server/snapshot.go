package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/paxos"
)

// Group snapshots (issue 11). The replica snapshots a group every
// SnapshotEvery applied slots (replica.Snapshotter) and wraps what this file
// returns with its exactly-once table. A group's state here is its lock table
// (lease.Table.Snapshot) and its election state (election.Elector's
// SnapshotGroup: the master lease as the log decides it). What the server
// derives from them is rebuilt on restore: the session clock's membership
// (trackSessions keeps it in step with applies; a restore starts every
// session's count afresh, as a replay after a restart does), and the
// client streams that wait or watch in the group are closed, since the
// events between the old state and the restored one are not known here: the
// clients reconnect, and read the table again.
//
// Layout: "LKGS", version byte, (version 2 only: a flags byte), the
// table's bytes (uvarint length, bytes), the election's bytes (uvarint
// length, bytes), then the CRC-32C of all bytes before it, little-endian.
// Version 1 is written whenever no flag is set, so that snapshots of groups
// never restored from a backup keep the layout older nodes read.
//
// Flag bit 0 (flagFloorPending): the group was restored from a backup and
// no OpRaiseTokenFloor has been applied since (restore.go). It is
// replicated state, like the table: every node of the group sets and clears
// it at the same slot.

const (
	groupSnapMagic   = "LKGS"
	groupSnapVersion = 1
	// groupSnapFlagged is the layout with a flags byte.
	groupSnapFlagged = 2
	flagFloorPending = 1 << 0
	// MaxGroupSnapshot bounds one group's snapshot, here and on transfer.
	MaxGroupSnapshot = 1 << 30
)

// ErrBadGroupSnapshot wraps every reason a group snapshot is refused.
var ErrBadGroupSnapshot = errors.New("server: bad group snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeGroupSnapshot(table, elect []byte, flags byte) []byte {
	b := make([]byte, 0, len(groupSnapMagic)+2+2*binary.MaxVarintLen64+len(table)+len(elect)+4)
	b = append(b, groupSnapMagic...)
	if flags == 0 {
		b = append(b, groupSnapVersion)
	} else {
		b = append(b, groupSnapFlagged, flags)
	}
	b = binary.AppendUvarint(b, uint64(len(table)))
	b = append(b, table...)
	b = binary.AppendUvarint(b, uint64(len(elect)))
	b = append(b, elect...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeGroupSnapshot checks b's frame and returns its parts, which alias b.
func decodeGroupSnapshot(b []byte) (table, elect []byte, flags byte, err error) {
	bad := func(format string, args ...any) ([]byte, []byte, byte, error) {
		return nil, nil, 0, fmt.Errorf("%w: %s", ErrBadGroupSnapshot, fmt.Sprintf(format, args...))
	}
	if len(b) > MaxGroupSnapshot {
		return bad("%d bytes, at most %d", len(b), MaxGroupSnapshot)
	}
	if len(b) < len(groupSnapMagic)+1+4 || string(b[:len(groupSnapMagic)]) != groupSnapMagic {
		return bad("not a group snapshot (%d bytes)", len(b))
	}
	v := b[len(groupSnapMagic)]
	if v != groupSnapVersion && v != groupSnapFlagged {
		return bad("version %d, this build reads %d and %d", v, groupSnapVersion, groupSnapFlagged)
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return bad("checksum mismatch: the snapshot is damaged")
	}
	p := body[len(groupSnapMagic)+1:]
	if v == groupSnapFlagged {
		if len(p) == 0 || p[0] == 0 || p[0]&^flagFloorPending != 0 {
			return bad("bad flags")
		}
		flags, p = p[0], p[1:]
	}
	part := func(limit int) ([]byte, bool) {
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p)-n) || l > uint64(limit) {
			return nil, false
		}
		out := p[n : n+int(l)]
		p = p[n+int(l):]
		return out, true
	}
	table, ok1 := part(MaxGroupSnapshot)
	elect, ok2 := part(election.MaxGroupSnapshot)
	if !ok1 || !ok2 || len(p) != 0 {
		return bad("malformed parts")
	}
	return table, elect, flags, nil
}

// SnapshotGroup implements replica.Snapshotter: group g's lock table and
// election state. It runs on the replica's goroutine, between applies.
func (s *Server) SnapshotGroup(g paxos.GroupID) ([]byte, error) {
	encode, err := s.CaptureGroup(g)
	if err != nil {
		return nil, err
	}
	return encode()
}

// CaptureGroup implements replica.SnapshotCapturer: it copies group g's
// lock table (lease.Table.Freeze) and election state, between applies on
// the replica's goroutine, and returns the encoding, which the replica runs
// on another goroutine so that a large table does not stall proposals.
func (s *Server) CaptureGroup(g paxos.GroupID) (func() ([]byte, error), error) {
	if int(g) >= len(s.groups) {
		return nil, fmt.Errorf("server: no group %d", g)
	}
	gs := s.groups[g]
	gs.mu.Lock()
	frozen := gs.table.Freeze()
	var flags byte
	if gs.floorPending {
		flags |= flagFloorPending
	}
	gs.mu.Unlock()
	elect, err := s.elector.SnapshotGroup(g, s.now())
	if err != nil {
		return nil, err
	}
	return func() ([]byte, error) { return encodeGroupSnapshot(frozen.Encode(), elect, flags), nil }, nil
}

// RestoreGroup implements replica.Snapshotter. Every part is checked before
// anything changes: the frame, the election part, and the table (Restore
// decodes and checks it whole before it switches); the election restore
// that follows cannot fail on what was checked.
func (s *Server) RestoreGroup(g paxos.GroupID, data []byte) error {
	if int(g) >= len(s.groups) {
		return fmt.Errorf("server: no group %d", g)
	}
	table, elect, flags, err := decodeGroupSnapshot(data)
	if err != nil {
		return err
	}
	if err := election.CheckGroupSnapshot(elect); err != nil {
		return err
	}
	now := s.now()
	gs := s.groups[g]
	gs.mu.Lock()
	if err := gs.table.Restore(table); err != nil {
		gs.mu.Unlock()
		return err
	}
	gs.floorPending = flags&flagFloorPending != 0
	sessions := gs.table.Sessions()
	gs.mu.Unlock()
	if err := s.elector.RestoreGroup(g, elect, now); err != nil {
		// Checked above: only a programming error gets here.
		s.log.Error("the election part of a checked group snapshot was refused", "group", g, "err", err)
	}
	// The session clock holds exactly the table's sessions, each seen now.
	s.sessions.mu.Lock()
	gc := &groupClock{entries: make(map[uint64]*clockEntry, len(sessions))}
	for _, si := range sessions {
		gc.touch(si.ID, si.TTL, now)
	}
	s.sessions.groups[g] = gc
	s.sessions.mu.Unlock()
	s.closeGroupStreams(g)
	return nil
}

// closeGroupStreams closes the client streams that wait for a lock of group
// g or watch one of its names on this node: they may have missed events.
func (s *Server) closeGroupStreams(g paxos.GroupID) {
	h := s.hub
	var streams []*clientStream
	h.mu.Lock()
	for k, w := range h.waiters {
		if k.g == g {
			streams = append(streams, w.st)
		}
	}
	for name, m := range h.watchers {
		if paxos.GroupID(wire.GroupOf(name, len(s.groups))) == g {
			for st := range m {
				streams = append(streams, st)
			}
		}
	}
	h.mu.Unlock()
	for _, st := range streams {
		st.close()
	}
	if len(streams) > 0 {
		s.log.Info("closed client streams that wait or watch in a restored group", "group", g, "streams", len(streams))
	}
}

// TableSnapshot returns group g's lock table as lease.Table.Snapshot bytes
// (nil for an unknown group). Two nodes that applied the same slots return
// the same bytes.
func (s *Server) TableSnapshot(g paxos.GroupID) []byte {
	if int(g) >= len(s.groups) {
		return nil
	}
	gs := s.groups[g]
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.table.Snapshot()
}

// SnapshotsInstalled counts the group snapshots this node installed from
// peers since it started.
func (s *Server) SnapshotsInstalled() int64 { return s.replica.SnapshotsInstalled() }
