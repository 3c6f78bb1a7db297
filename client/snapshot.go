package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockd/lockd/internal/backup"
	"github.com/lockd/lockd/internal/wire"
)

// GroupSnapshot describes one group of a backup.
type GroupSnapshot struct {
	Group uint32 `json:"group"`
	// Slot is where the snapshot was taken: it holds every slot below.
	Slot uint64 `json:"slot"`
	// Bytes is its size; Node the master that served it.
	Bytes int64  `json:"bytes"`
	Node  uint32 `json:"node"`
}

// SnapshotInfo describes a backup SaveSnapshot wrote.
type SnapshotInfo struct {
	Path      string          `json:"path"`
	ClusterID string          `json:"cluster"`
	Bytes     int64           `json:"bytes"`
	Groups    []GroupSnapshot `json:"groups"`
}

// groupSnapshotAttempts bounds how often one group's snapshot is started
// again after its master changed or dropped it mid-read.
const groupSnapshotAttempts = 5

// SaveSnapshot writes a backup of the cluster to path (lockctl snapshot
// save; lockd restore reads it): every group's snapshot, taken by the
// group's master at a slot that holds every command acknowledged before
// the call, read in chunks and checked. It needs the admin role (an access
// rule granting "admin" on the prefix ""); without it the error matches
// ErrPermission. The file is written aside (path.part) and renamed, so path
// is a whole backup or is not touched.
func (c *Client) SaveSnapshot(ctx context.Context, path string) (*SnapshotInfo, error) {
	info := &SnapshotInfo{Path: path}
	var w *backup.Writer
	defer func() {
		if w != nil {
			w.Abort()
		}
	}()
	for g := range c.groups {
		var (
			gs      GroupSnapshot
			cluster string
			data    []byte
			err     error
		)
		for attempt := 1; ; attempt++ {
			gs, cluster, data, err = c.groupSnapshot(ctx, uint32(g))
			if err == nil || attempt == groupSnapshotAttempts || !errors.Is(err, errRestartGroup) || ctx.Err() != nil {
				break
			}
			c.log.Debug("lockd: group snapshot started again", "group", g, "attempt", attempt, "err", err)
		}
		if err != nil {
			return nil, fmt.Errorf("lockd: snapshot of group %d: %w", g, err)
		}
		if w == nil {
			info.ClusterID = cluster
			if w, err = backup.Create(path, cluster, c.groups, time.Now()); err != nil {
				return nil, fmt.Errorf("lockd: %w", err)
			}
		}
		if err := w.Add(gs.Slot, gs.Node, data); err != nil {
			return nil, fmt.Errorf("lockd: %w", err)
		}
		info.Groups = append(info.Groups, gs)
	}
	h, err := w.Close()
	w = nil
	if err != nil {
		return nil, fmt.Errorf("lockd: %w", err)
	}
	info.Bytes = h.Size()
	return info, nil
}

// errRestartGroup: the group's capture was lost mid-read (its node changed
// or dropped it); taking it again from the current master may work.
var errRestartGroup = errors.New("the snapshot was lost mid-read")

// groupSnapshot reads group g's snapshot: the first request goes to the
// group's master, which takes it; the chunks are read from that same node.
func (c *Client) groupSnapshot(ctx context.Context, g uint32) (GroupSnapshot, string, []byte, error) {
	gs := GroupSnapshot{Group: g}
	x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeSnapshot, Group: g}, callOpts{group: int(g)})
	if err != nil {
		return gs, "", nil, err
	}
	m := x.resp
	if m.Code != wire.CodeOK {
		return gs, "", nil, errorFor(&m, nil)
	}
	if m.Size == 0 || m.Size > backup.MaxGroupBytes {
		return gs, "", nil, fmt.Errorf("node %d announced a snapshot of %d bytes, want 1 to %d", m.Node, m.Size, backup.MaxGroupBytes)
	}
	addr, id, size := x.cn.addr, m.Epoch, m.Size
	gs.Slot, gs.Node, gs.Bytes = m.Slot, m.Node, int64(size)
	cluster := m.Name
	data := make([]byte, 0, size)
	for {
		if m.Offset != uint64(len(data)) || m.Size != size || m.Slot != gs.Slot || uint64(len(data)+len(m.Chunk)) > size {
			return gs, "", nil, fmt.Errorf("node %d sent a chunk that does not fit (offset %d, %d bytes, of %d; have %d)", m.Node, m.Offset, len(m.Chunk), m.Size, len(data))
		}
		data = append(data, m.Chunk...)
		if uint64(len(data)) == size {
			break
		}
		if len(m.Chunk) == 0 {
			return gs, "", nil, fmt.Errorf("node %d sent an empty chunk at offset %d of %d", m.Node, len(data), size)
		}
		x, err = c.invoke(ctx, &wire.Msg{Type: wire.TypeSnapshot, Group: g, Epoch: id, Offset: uint64(len(data))}, callOpts{group: int(g), addr: addr})
		if err != nil {
			if ctx.Err() != nil {
				return gs, "", nil, err
			}
			return gs, "", nil, fmt.Errorf("%w: %w", errRestartGroup, err)
		}
		m = x.resp
		if m.Code == wire.CodeNotFound {
			return gs, "", nil, fmt.Errorf("%w: %w", errRestartGroup, errorFor(&m, nil))
		}
		if m.Code != wire.CodeOK {
			return gs, "", nil, errorFor(&m, nil)
		}
	}
	if !backup.Sealed(data) {
		return gs, "", nil, fmt.Errorf("%w: the snapshot from node %d fails its checksum", errRestartGroup, gs.Node)
	}
	return gs, cluster, data, nil
}
