package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// Meta is the cluster record of a data dir: which cluster and node the state
// belongs to, and the cluster's group count, which is fixed when the cluster
// is created (a lock name maps to a group by a stable hash, so changing the
// count would move locks between groups and break fencing tokens).
type Meta struct {
	ClusterID string
	Groups    int
	NodeID    uint32
}

// ErrMetaMismatch is wrapped by CheckMeta's errors: the data dir belongs to
// another cluster, another node or another group count.
var ErrMetaMismatch = errors.New("pebblestore: data dir does not match this node's configuration")

// metaVersion is the version byte of the encoded Meta.
const metaVersion = 1

// maxClusterID bounds the cluster id, on write and on read.
const maxClusterID = 256

// LoadMeta returns the stored cluster record; ok is false when there is none
// (a new data dir).
func (s *Store) LoadMeta() (m Meta, ok bool, err error) {
	if s.closed.Load() {
		return Meta{}, false, ErrClosed
	}
	v, closer, err := s.db.Get([]byte(metaKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("pebblestore: read cluster record in %s: %w", s.dir, err)
	}
	defer closer.Close()
	rec, err := unseal([]byte(metaKey), v)
	if err != nil {
		return Meta{}, false, fmt.Errorf("pebblestore: cluster record in %s: %w", s.dir, err)
	}
	m, err = decodeMeta(rec)
	if err != nil {
		return Meta{}, false, fmt.Errorf("pebblestore: cluster record in %s: %w", s.dir, err)
	}
	return m, true, nil
}

// SaveMeta writes the cluster record, synced.
func (s *Store) SaveMeta(m Meta) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := m.validate(); err != nil {
		return err
	}
	if err := s.stamp(); err != nil {
		return err
	}
	if err := s.db.Set([]byte(metaKey), seal(appendMeta(nil, m), []byte(metaKey), 0), pebble.Sync); err != nil {
		return fmt.Errorf("pebblestore: write cluster record in %s: %w", s.dir, err)
	}
	return nil
}

// CheckMeta checks that the data dir belongs to the node described by want,
// and refuses, with ErrMetaMismatch, a node started with another group count,
// another cluster id or another node id. A new data dir (no record and no
// Paxos state) is stamped with want. A data dir that has Paxos state but no
// record is refused: its group count cannot be checked.
func (s *Store) CheckMeta(want Meta) error {
	if err := want.validate(); err != nil {
		return err
	}
	got, ok, err := s.LoadMeta()
	if err != nil {
		return err
	}
	if !ok {
		used, err := s.hasPaxosState()
		if err != nil {
			return err
		}
		if used {
			return fmt.Errorf("%w: data dir %s holds Paxos state but no cluster record, so its group count cannot be checked; start with the data dir it was created with",
				ErrMetaMismatch, s.dir)
		}
		// The state file first: a crash between the two leaves a file
		// with no promise in it, which a new start takes as a new dir.
		if err := s.stamp(); err != nil {
			return err
		}
		return s.SaveMeta(want)
	}
	switch {
	case got.Groups != want.Groups:
		return fmt.Errorf("%w: data dir %s was created with %d groups, this node was started with --groups %d: the group count is fixed when a cluster is created",
			ErrMetaMismatch, s.dir, got.Groups, want.Groups)
	case got.ClusterID != want.ClusterID:
		return fmt.Errorf("%w: data dir %s belongs to cluster %q, this node was started for cluster %q: give each cluster its own data dir",
			ErrMetaMismatch, s.dir, got.ClusterID, want.ClusterID)
	case got.NodeID != want.NodeID:
		return fmt.Errorf("%w: data dir %s holds the state of node %d, this node was started as node %d: give each node its own data dir",
			ErrMetaMismatch, s.dir, got.NodeID, want.NodeID)
	}
	return nil
}

func (m Meta) validate() error {
	switch {
	case m.Groups < 1 || m.Groups > math.MaxInt32:
		return fmt.Errorf("pebblestore: cluster record: Groups is %d, want 1 to %d", m.Groups, math.MaxInt32)
	case m.NodeID == 0:
		return errors.New("pebblestore: cluster record: NodeID must be set (node ids start at 1)")
	case len(m.ClusterID) > maxClusterID:
		return fmt.Errorf("pebblestore: cluster record: ClusterID has %d bytes, the limit is %d", len(m.ClusterID), maxClusterID)
	}
	return nil
}

// hasPaxosState reports whether any hard state or log key exists.
func (s *Store) hasPaxosState() (bool, error) {
	for _, prefix := range []string{hardPrefix, logPrefix} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd(prefix)})
		if err != nil {
			return false, fmt.Errorf("pebblestore: scan %s: %w", s.dir, err)
		}
		found := it.First()
		if err := it.Close(); err != nil {
			return false, fmt.Errorf("pebblestore: scan %s: %w", s.dir, err)
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// prefixEnd returns the first key after every key with the prefix (which
// ends in '/', so its last byte can simply be raised).
func prefixEnd(prefix string) []byte {
	end := []byte(prefix)
	end[len(end)-1]++
	return end
}

// Meta record, version 1: version byte, cluster id length, cluster id,
// groups, node id; integers are uvarints.
func appendMeta(dst []byte, m Meta) []byte {
	dst = append(dst, metaVersion)
	dst = binary.AppendUvarint(dst, uint64(len(m.ClusterID)))
	dst = append(dst, m.ClusterID...)
	dst = binary.AppendUvarint(dst, uint64(m.Groups))
	return binary.AppendUvarint(dst, uint64(m.NodeID))
}

func decodeMeta(b []byte) (Meta, error) {
	bad := func(why string) (Meta, error) {
		return Meta{}, fmt.Errorf("corrupt cluster record (%x): %s", b, why)
	}
	if len(b) == 0 {
		return bad("empty")
	}
	if b[0] != metaVersion {
		return bad(fmt.Sprintf("unknown version %d (this build reads version %d; was it written by a newer lockd?)", b[0], metaVersion))
	}
	b = b[1:]
	n, k := uvarint(b)
	if k <= 0 || n > maxClusterID || n > uint64(len(b)-k) {
		return bad("bad cluster id length")
	}
	id := string(b[k : k+int(n)])
	b = b[k+int(n):]
	groups, k := uvarint(b)
	if k <= 0 || groups > math.MaxInt32 {
		return bad("bad group count")
	}
	b = b[k:]
	node, k := uvarint(b)
	if k <= 0 || node > math.MaxUint32 || k != len(b) {
		return bad("bad node id or trailing bytes")
	}
	return Meta{ClusterID: id, Groups: int(groups), NodeID: uint32(node)}, nil
}

// uvarint is binary.Uvarint that also refuses encodings longer than needed
// (k is 0 then), so that a record has one encoding only.
func uvarint(b []byte) (v uint64, k int) {
	v, k = binary.Uvarint(b)
	if k > 1 && b[k-1] == 0 {
		return 0, 0
	}
	return v, k
}
