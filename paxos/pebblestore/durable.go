package pebblestore

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/lockd/lockd/paxos"
)

// StateFile is the name of the high-water mark file in a data dir, next to
// pebble's files (pebble ignores files it does not know).
const StateFile = "LOCKD-STATE"

// ErrDamaged is wrapped by every error that says the data dir lost or
// damaged durable state: a node that sees it must not serve (it could vote
// against a promise it forgot). See the package doc.
var ErrDamaged = errors.New("pebblestore: durable state is damaged or lost")

// ErrChecksum is wrapped by errors for records that fail their checksum; it
// wraps ErrDamaged.
var ErrChecksum = fmt.Errorf("%w: checksum mismatch", ErrDamaged)

// mark is one group's high-water mark: durable state that pebble confirmed
// (a synced commit returned) before the mark was written.
type mark struct {
	promised paxos.Ballot
	commit   uint64
	// floor is the lowest slot the log must still hold: DeleteBefore raises
	// it (in the file) before it deletes anything.
	floor uint64
}

// stateFile is the content of StateFile.
type stateFile struct {
	// incarnation names this data dir's life: chosen at random when the dir
	// is first stamped, never changed. Peers remember it, so that a node
	// that comes back with another one (a wiped or replaced data dir) is
	// known for what it is.
	incarnation uint64
	// recovering is set while a node that was re-created empty catches up
	// and must not vote (lockd run --recover-from-peers).
	recovering bool
	marks      []mark
	// peers holds the incarnation of every peer this node accepted
	// messages from.
	peers map[uint32]uint64
}

const stateMagic = "LOCKDST1"

// maxStateGroups bounds the groups of a state file on read.
const maxStateGroups = 1 << 16

func (f *stateFile) encode() []byte {
	b := []byte(stateMagic)
	b = binary.AppendUvarint(b, f.incarnation)
	flags := byte(0)
	if f.recovering {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(f.marks)))
	for _, m := range f.marks {
		b = binary.AppendUvarint(b, m.promised.Round)
		b = binary.AppendUvarint(b, uint64(m.promised.Node))
		b = binary.AppendUvarint(b, m.commit)
		b = binary.AppendUvarint(b, m.floor)
	}
	b = binary.AppendUvarint(b, uint64(len(f.peers)))
	for _, id := range sortedKeys(f.peers) {
		b = binary.AppendUvarint(b, uint64(id))
		b = binary.AppendUvarint(b, f.peers[id])
	}
	return binary.LittleEndian.AppendUint32(b, recordSum([]byte(StateFile), b))
}

func decodeStateFile(b []byte) (stateFile, error) {
	var f stateFile
	bad := func(why string) (stateFile, error) {
		return stateFile{}, fmt.Errorf("%w: %s (%d bytes): %s", ErrChecksum, StateFile, len(b), why)
	}
	if len(b) < len(stateMagic)+sumLen || string(b[:len(stateMagic)]) != stateMagic {
		return bad("no LOCKDST1 header (truncated, or not a lockd state file)")
	}
	body := b[:len(b)-sumLen]
	if got, want := recordSum([]byte(StateFile), body), binary.LittleEndian.Uint32(b[len(b)-sumLen:]); got != want {
		return bad(fmt.Sprintf("stored CRC-32C %08x, computed %08x", want, got))
	}
	r := body[len(stateMagic):]
	next := func() uint64 {
		v, k := binary.Uvarint(r)
		if k <= 0 {
			r = nil
			return math.MaxUint64
		}
		r = r[k:]
		return v
	}
	f.incarnation = next()
	if len(r) == 0 {
		return bad("truncated after the incarnation")
	}
	f.recovering = r[0]&1 != 0
	r = r[1:]
	n := next()
	if n > maxStateGroups {
		return bad("bad group count")
	}
	f.marks = make([]mark, n)
	for i := range f.marks {
		round, node, commit, floor := next(), next(), next(), next()
		if node > math.MaxUint32 {
			return bad("bad ballot")
		}
		f.marks[i] = mark{promised: paxos.Ballot{Round: round, Node: paxos.NodeID(node)}, commit: commit, floor: floor}
	}
	np := next()
	if np > 1<<20 {
		return bad("bad peer count")
	}
	f.peers = map[uint32]uint64{}
	for range np {
		id, inc := next(), next()
		if id > math.MaxUint32 {
			return bad("bad peer id")
		}
		f.peers[uint32(id)] = inc
	}
	if r == nil || len(r) != 0 {
		return bad("malformed body")
	}
	return f, nil
}

func sortedKeys(m map[uint32]uint64) []uint32 { return slices.Sorted(maps.Keys(m)) }

// readStateFile reads dir's state file; ok is false when there is none.
func readStateFile(fs vfs.FS, dir string) (f stateFile, ok bool, err error) {
	file, err := fs.Open(fs.PathJoin(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return stateFile{}, false, nil
	}
	if err != nil {
		return stateFile{}, false, fmt.Errorf("pebblestore: open %s: %w", fs.PathJoin(dir, StateFile), err)
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, 64<<20))
	if err != nil {
		return stateFile{}, false, fmt.Errorf("pebblestore: read %s: %w", fs.PathJoin(dir, StateFile), err)
	}
	f, err = decodeStateFile(b)
	if err != nil {
		return stateFile{}, false, fmt.Errorf("%w in %s", err, dir)
	}
	return f, true, nil
}

// writeStateFile replaces dir's state file atomically and durably: a
// temporary file, synced, renamed over the old one, and the directory
// synced.
func writeStateFile(fs vfs.FS, dir string, f *stateFile) error {
	path := fs.PathJoin(dir, StateFile)
	tmp := path + ".tmp"
	file, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("pebblestore: write %s: %w", path, err)
	}
	_, err = file.Write(f.encode())
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err == nil {
		var d vfs.File
		if d, err = fs.OpenDir(dir); err == nil {
			err = d.Sync()
			if cerr := d.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		return fmt.Errorf("pebblestore: write %s: %w", path, err)
	}
	return nil
}

func newIncarnation() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("pebblestore: random incarnation: %w", err)
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v, nil
		}
	}
}

// ErrDiskFull is returned by Open and by Save when the data dir's disk has
// less free space than Options.DiskReserve: nothing is written then, so the
// state on disk stays intact (pebble cannot survive a failed WAL write).
// It wraps syscall.ENOSPC, so that callers that do not know this package
// (the replica) can tell it apart and wait for space.
var ErrDiskFull = fmt.Errorf("pebblestore: disk full: %w", syscall.ENOSPC)
