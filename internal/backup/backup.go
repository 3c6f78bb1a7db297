// Package backup is the file format of a lockd backup: what `lockctl
// snapshot save FILE` writes and `lockd restore --from FILE` reads.
//
// A backup holds one snapshot per Paxos group, each taken by the group's
// master at a slot (every slot below it is chosen and applied in it), in the
// envelope the replica stores and transfers (paxos/replica). The groups are
// not cut at one instant across the cluster: they are independent state
// machines (a lock name lives in exactly one group), so each group's own
// cut is what a restore needs.
//
// Layout, integers little-endian:
//
//	magic "LOCKDBAK" (8 bytes), version (u16, 1), group count (u32),
//	created (i64, unix nanoseconds), cluster id length (u16) and bytes,
//	per group: slot (u64), size (u64), CRC-32C of its bytes (u32),
//	           node that served it (u32),
//	CRC-32C of every header byte before it (u32),
//	then the groups' bytes, group 0 first, back to back.
//
// The file is exactly the header plus the groups' sizes long: a cut or
// padded file is refused, as is any checksum mismatch. The header is
// fixed-width so that a writer can stream the groups and fill the header in
// last; Writer does so in a side file and renames it into place, so a save
// that fails never leaves a half backup under the file's name.
package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Magic starts every backup file.
const Magic = "LOCKDBAK"

// Version is the layout this build writes and reads.
const Version = 1

// Bounds the decoder enforces before it allocates anything.
const (
	// MaxGroups is the largest group count a cluster can have.
	MaxGroups = 4096
	// MaxClusterID bounds the cluster id (as the data dir's record does).
	MaxClusterID = 256
	// MaxGroupBytes bounds one group's snapshot (as a transfer does).
	MaxGroupBytes = 1 << 30
)

// ErrBadBackup wraps every reason a backup file is refused.
var ErrBadBackup = errors.New("backup: not a valid lockd backup")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Group describes one group's snapshot in a backup.
type Group struct {
	// Slot is the snapshot's slot: it holds every slot below it.
	Slot uint64
	// Size is its length in bytes, Sum its CRC-32C.
	Size uint64
	Sum  uint32
	// Node is the master that served it.
	Node uint32
}

// Header is the head of a backup file.
type Header struct {
	ClusterID string
	Created   time.Time
	Groups    []Group
}

const (
	fixedHead = len(Magic) + 2 + 4 + 8 + 2
	groupRec  = 8 + 8 + 4 + 4
)

// HeaderSize is the encoded size of a header with groups groups and a
// cluster id of clusterID bytes.
func HeaderSize(groups, clusterID int) int64 {
	return int64(fixedHead + clusterID + groups*groupRec + 4)
}

// Size is the length of the whole file the header describes.
func (h *Header) Size() int64 {
	n := HeaderSize(len(h.Groups), len(h.ClusterID))
	for _, g := range h.Groups {
		n += int64(g.Size)
	}
	return n
}

// Encode returns the header's bytes. It checks the same bounds Decode does.
func (h *Header) Encode() ([]byte, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, HeaderSize(len(h.Groups), len(h.ClusterID)))
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.Groups)))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Created.UnixNano()))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.ClusterID)))
	b = append(b, h.ClusterID...)
	for _, g := range h.Groups {
		b = binary.LittleEndian.AppendUint64(b, g.Slot)
		b = binary.LittleEndian.AppendUint64(b, g.Size)
		b = binary.LittleEndian.AppendUint32(b, g.Sum)
		b = binary.LittleEndian.AppendUint32(b, g.Node)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

func (h *Header) check() error {
	switch {
	case len(h.Groups) < 1 || len(h.Groups) > MaxGroups:
		return fmt.Errorf("%w: %d groups, want 1 to %d", ErrBadBackup, len(h.Groups), MaxGroups)
	case len(h.ClusterID) > MaxClusterID:
		return fmt.Errorf("%w: cluster id of %d bytes, at most %d", ErrBadBackup, len(h.ClusterID), MaxClusterID)
	}
	for i, g := range h.Groups {
		if g.Size == 0 || g.Size > MaxGroupBytes {
			return fmt.Errorf("%w: group %d is %d bytes, want 1 to %d", ErrBadBackup, i, g.Size, MaxGroupBytes)
		}
	}
	return nil
}

// ReadHeader reads and checks a header from r. It allocates at most the
// fixed part, the cluster id (at most MaxClusterID bytes) and the group
// records (at most MaxGroups), whatever r holds.
func ReadHeader(r io.Reader) (*Header, error) {
	fixed := make([]byte, fixedHead)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return nil, fmt.Errorf("%w: the file ends inside the header (%v)", ErrBadBackup, err)
	}
	if string(fixed[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: it does not start with %q (is it a lockd backup, made by lockctl snapshot save?)", ErrBadBackup, Magic)
	}
	p := fixed[len(Magic):]
	if v := binary.LittleEndian.Uint16(p); v != Version {
		return nil, fmt.Errorf("%w: version %d, this build reads version %d: restore it with the lockd that wrote it, or a newer one", ErrBadBackup, v, Version)
	}
	groups := binary.LittleEndian.Uint32(p[2:])
	created := int64(binary.LittleEndian.Uint64(p[6:]))
	idLen := binary.LittleEndian.Uint16(p[14:])
	if groups < 1 || groups > MaxGroups {
		return nil, fmt.Errorf("%w: header says %d groups, want 1 to %d: the header is damaged", ErrBadBackup, groups, MaxGroups)
	}
	if int(idLen) > MaxClusterID {
		return nil, fmt.Errorf("%w: header says a cluster id of %d bytes, at most %d: the header is damaged", ErrBadBackup, idLen, MaxClusterID)
	}
	rest := make([]byte, int(idLen)+int(groups)*groupRec+4)
	if _, err := io.ReadFull(r, rest); err != nil {
		return nil, fmt.Errorf("%w: the file ends inside the header (%v)", ErrBadBackup, err)
	}
	body := append(fixed, rest[:len(rest)-4]...)
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(rest[len(rest)-4:]); got != want {
		return nil, fmt.Errorf("%w: header checksum %08x, computed %08x: the file is damaged; use another copy", ErrBadBackup, want, got)
	}
	h := &Header{ClusterID: string(rest[:idLen]), Created: time.Unix(0, created).UTC(), Groups: make([]Group, groups)}
	q := rest[idLen:]
	for i := range h.Groups {
		h.Groups[i] = Group{
			Slot: binary.LittleEndian.Uint64(q), Size: binary.LittleEndian.Uint64(q[8:]),
			Sum: binary.LittleEndian.Uint32(q[16:]), Node: binary.LittleEndian.Uint32(q[20:]),
		}
		q = q[groupRec:]
	}
	if err := h.check(); err != nil {
		return nil, err
	}
	return h, nil
}

// ReadGroup reads group g's bytes from r, which must be positioned at them
// (the groups follow the header in order), and checks their checksum.
// remaining is how many bytes r still holds (from the file's size): a size
// the header claims beyond it is refused before anything is allocated.
func (h *Header) ReadGroup(r io.Reader, g int, remaining int64) ([]byte, error) {
	gr := h.Groups[g]
	if int64(gr.Size) > remaining {
		return nil, fmt.Errorf("%w: group %d should have %d bytes, only %d are left in the file: the file was cut short; use another copy", ErrBadBackup, g, gr.Size, remaining)
	}
	b := make([]byte, gr.Size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: group %d: %v", ErrBadBackup, g, err)
	}
	if got := crc32.Checksum(b, castagnoli); got != gr.Sum {
		return nil, fmt.Errorf("%w: group %d: checksum %08x, computed %08x: the file is damaged; use another copy", ErrBadBackup, g, gr.Sum, got)
	}
	return b, nil
}

// Decode reads a whole backup held in memory: its header and every
// group's bytes, checked. It is what Open does on a file, for tests and
// fuzzing.
func Decode(b []byte) (*Header, [][]byte, error) {
	r := bytes.NewReader(b)
	h, err := ReadHeader(r)
	if err != nil {
		return nil, nil, err
	}
	if h.Size() != int64(len(b)) {
		return nil, nil, sizeError(h, int64(len(b)))
	}
	groups := make([][]byte, len(h.Groups))
	for i := range h.Groups {
		if groups[i], err = h.ReadGroup(r, i, int64(r.Len())); err != nil {
			return nil, nil, err
		}
	}
	return h, groups, nil
}

func sizeError(h *Header, got int64) error {
	if got < h.Size() {
		return fmt.Errorf("%w: the file has %d bytes, its header describes %d: it was cut short; use another copy", ErrBadBackup, got, h.Size())
	}
	return fmt.Errorf("%w: the file has %d bytes, its header describes %d: bytes were added after its end; use another copy", ErrBadBackup, got, h.Size())
}

// Sum returns the CRC-32C a Group records for b.
func Sum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Sealed reports whether b ends with the CRC-32C (little-endian) of the
// bytes before it, as every group snapshot's envelope does
// (replica.SealSnapshot): the saving client checks each group with it once
// it holds every chunk.
func Sealed(b []byte) bool {
	return len(b) >= 4 && crc32.Checksum(b[:len(b)-4], castagnoli) == binary.LittleEndian.Uint32(b[len(b)-4:])
}
