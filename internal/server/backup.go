package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/paxos"
)

// Backups (lockctl snapshot save). An admin reads each group's snapshot
// from the group's master in chunks (wire.TypeSnapshot). The first request
// makes the master capture the group (replica.Capture: on the replica's
// goroutine, between applies, so at a slot below which everything is
// chosen and applied) while it serves the group under one lease, checked
// before and after: every command acknowledged to a client before the
// request was applied on the master by then (a master serves only once it
// has applied what earlier masters chose, and every later command goes
// through it). The capture is kept here, named by a random id, while its
// chunks are read; the client checks the envelope's checksum once it has
// every byte.

const (
	// maxCaptures bounds the captures a node keeps at once; the least
	// recently read goes first. A client that loses its capture starts the
	// group again.
	maxCaptures = 4
	// captureIdle drops a capture nobody read for that long.
	captureIdle = 2 * time.Minute
	// snapshotChunk is the size of one chunk (at most wire.MaxChunkBytes).
	snapshotChunk = 512 << 10
)

// captures holds the snapshots taken for backups while their chunks are
// read. mu guards m.
type captures struct {
	mu sync.Mutex
	m  map[uint64]*capture
}

type capture struct {
	g    paxos.GroupID
	slot uint64
	data []byte
	who  string // the identity that took it; only it reads it
	used time.Time
}

// put stores c under a new id, dropping idle captures and, past
// maxCaptures, the least recently read.
func (cs *captures) put(c *capture, now time.Time) uint64 {
	var b [8]byte
	rand.Read(b[:])
	id := binary.LittleEndian.Uint64(b[:]) | 1 // never 0, which asks for a new one
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.m == nil {
		cs.m = map[uint64]*capture{}
	}
	for k, old := range cs.m {
		if now.Sub(old.used) > captureIdle {
			delete(cs.m, k)
		}
	}
	for len(cs.m) >= maxCaptures {
		var oldest uint64
		for k, old := range cs.m {
			if oldest == 0 || old.used.Before(cs.m[oldest].used) {
				oldest = k
			}
		}
		delete(cs.m, oldest)
	}
	cs.m[id] = c
	return id
}

func (cs *captures) get(id uint64, g paxos.GroupID, who string, now time.Time) *capture {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.m[id]
	if c == nil || c.g != g || c.who != who {
		return nil
	}
	c.used = now
	return c
}

func (cs *captures) drop(id uint64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.m, id)
}

// snapshot answers wire.TypeSnapshot (authorize has checked admin).
func (s *Server) snapshot(ctx context.Context, cs *clientStream, req *wire.Msg) *wire.Msg {
	if bad := s.checkGroup(req); bad != nil {
		return bad
	}
	g := paxos.GroupID(req.Group)
	now := time.Now()
	id := req.Epoch
	var c *capture
	if id == 0 {
		if !s.elector.Serving(g, now) {
			return s.notMaster(g)
		}
		_, epoch := s.elector.Master(g, now)
		slot, data, err := s.replica.Capture(ctx, g)
		if err != nil {
			return fail(wire.CodeInternal, "snapshot of group %d on node %d: %v", g, s.cfg.ID, err)
		}
		after := time.Now()
		if _, e := s.elector.Master(g, after); e != epoch || !s.elector.Serving(g, after) {
			// The lease changed hands meanwhile: another master may
			// have acknowledged commands this capture lacks.
			return s.notMaster(g)
		}
		c = &capture{g: g, slot: slot, data: data, who: cs.who.Name, used: after}
		id = s.captures.put(c, after)
		s.log.Info("group snapshot taken for a backup", "group", g, "slot", slot, "bytes", len(data), "admin", cs.who.Name)
	} else if c = s.captures.get(id, g, cs.who.Name, now); c == nil {
		return fail(wire.CodeNotFound, "node %d no longer holds snapshot %d of group %d (it was dropped after %v unread, or the node restarted): start the group again", s.cfg.ID, id, g, captureIdle)
	}
	if req.Offset > uint64(len(c.data)) {
		return fail(wire.CodeBadRequest, "offset %d is past the end of snapshot %d of group %d (%d bytes)", req.Offset, id, g, len(c.data))
	}
	end := min(req.Offset+snapshotChunk, uint64(len(c.data)))
	resp := &wire.Msg{Code: wire.CodeOK, Group: req.Group, Epoch: id, Slot: c.slot, Size: uint64(len(c.data)),
		Offset: req.Offset, Chunk: c.data[req.Offset:end], Name: s.cfg.ClusterID, Node: uint32(s.cfg.ID)}
	if end == uint64(len(c.data)) {
		s.captures.drop(id)
	}
	return resp
}
