// Package pebblestore keeps a lockd node's durable Paxos state, for every
// group of the node, in one pebble database. It implements paxos.Storage, and
// Save writes one Ready's changes of all groups as one synced batch (group
// commit across groups: one fsync per runtime step).
//
// # Key layout
//
// Integers in keys are big-endian, so that pebble's byte order is numeric
// order: a group's log is one contiguous key range in slot order, and
// Entries is one bounded iterator scan.
//
//	m/meta                              -> cluster record (Meta), see meta.go
//	h/<group u32 BE>                    -> paxos hard state (paxos.AppendHardState)
//	l/<group u32 BE>/<slot u64 BE>      -> log entry record (paxos.AppendEntryRecord)
//
// A log record holds the entry's ballot and value; its slot is the key's, and
// the Chosen flag is not stored (every slot below the hard state's commit
// index is chosen). Records are not compressed: they are short-lived (the log
// is truncated behind snapshots) and written once, so compression would only
// cost CPU on the write path.
//
// # Durable state is never silently lost
//
// An acceptor that forgot a promise or a vote must not vote again. Three
// things let a node know at start whether its state is intact:
//
//   - Every value is sealed with a CRC-32C of its key and bytes
//     (checksum.go), checked on every read; a failure is ErrChecksum.
//   - The state file LOCKD-STATE (durable.go), next to pebble's files, holds
//     a high-water mark per group: the highest promise and commit index
//     that pebble confirmed durable, and the floor below which the log was
//     deleted on purpose. It is checksummed and replaced atomically (write,
//     fsync, rename, fsync the dir). Save writes it after pebble's synced
//     commit returns and before Save returns whenever a promise rose (so a
//     reply vouching for a promise leaves only once the mark holds it), and
//     when a commit index ran commitSlack slots ahead; Close writes the
//     exact values. So the mark never runs ahead of pebble, and pebble's
//     state may only be at or above it.
//   - Verify, run once at start, reads every record (so pebble checks every
//     block's checksum too) and compares with the mark.
//
// Why each kind of damage is caught:
//
//   - Bytes flipped in the middle of the newest WAL, or the WAL cut: pebble
//     takes the bad record for a torn write and drops it and everything
//     after it, so it opens with older hard states (a promise below the
//     mark) or fewer log entries (slots below the commit index missing).
//   - Every WAL cut to zero: pebble opens empty, or with what its sstables
//     hold; the mark is non-zero (any vote raises a promise first), so
//     either "pebble holds nothing" or a promise below the mark.
//   - A flipped or cut MANIFEST: pebble refuses to open (a corruption
//     error, reported as ErrDamaged), or opens an older version without
//     some sstables: entries below the commit index missing, or hard states
//     below the mark.
//   - A flipped sstable: reading its block fails pebble's block checksum
//     during Verify's full scan; a record changed in a way pebble cannot
//     see fails the record's own checksum.
//   - The state file deleted or damaged while pebble holds state: refused,
//     since nothing vouches for pebble's state any more.
//   - An empty or missing data dir (the mark is gone with it): the store
//     cannot tell a wiped dir from a new one, so the node learns it from
//     its peers: the state file holds an incarnation, a random id made when
//     the dir is stamped, and the incarnation each peer had when this node
//     first accepted its messages. A peer that knows another incarnation
//     for a node refuses it (internal/server), and the node exits.
//
// Every such finding wraps ErrDamaged; lockd run exits with code 5 on it.
//
// A full disk: Open and Save refuse with ErrDiskFull below
// Options.DiskReserve, before pebble writes anything (pebble cannot survive
// a failed WAL write), so the state on disk stays intact.
package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/lockd/lockd/paxos"
)

const (
	hardPrefix = "h/"
	logPrefix  = "l/"
	metaKey    = "m/meta"

	hardKeyLen = len(hardPrefix) + 4
	logKeyLen  = len(logPrefix) + 4 + 1 + 8
)

// ErrClosed is returned by every method of a Store after Close.
var ErrClosed = errors.New("pebblestore: store is closed")

// Options configures a Store. The zero value is ready to use.
type Options struct {
	// FS is the file system the database lives on; nil means the operating
	// system's. Tests pass vfs.NewCrashableMem() to simulate crashes.
	FS vfs.FS
	// Logger receives pebble's messages: its routine messages at Debug level,
	// its errors at Error level. Nil means slog.Default().
	Logger *slog.Logger
	// MemTableSize is the size of pebble's memtable (default 64 MiB). The log
	// is written once and read rarely, so a large memtable mostly saves
	// flushes and compactions.
	MemTableSize uint64
	// Limits bounds what is read back from disk (default
	// paxos.DefaultLimits()). Save refuses a record that these limits would
	// refuse on reading, so that what was saved can always be loaded.
	Limits paxos.Limits
	// DiskReserve is the free space (bytes) the data dir's disk must keep:
	// Open refuses to start and Save refuses to write, with ErrDiskFull,
	// below it, so that pebble never meets a full disk in the middle of a
	// WAL write (which it cannot survive). Default 64 MiB; negative: off.
	DiskReserve int64
}

// Store is a node's durable Paxos state in a pebble database. Its methods are
// safe for concurrent use, but Close must not race with the others.
type Store struct {
	db     *pebble.DB
	dir    string
	lim    paxos.Limits
	closed atomic.Bool

	// mu guards buf, the scratch space Save encodes records in while it fills
	// its batch. pebble copies keys and values into the batch, so buf is
	// reused by every Save.
	mu  sync.Mutex
	buf []byte

	// fs is the file system of the database and of the state file.
	fs vfs.FS
	// hwmMu guards hwm, the high-water marks of durable state (hwm.go).
	hwmMu sync.Mutex
	hwm   hwm
	// reserve is Options.DiskReserve, with its default.
	reserve int64
	// snapMu guards snapSlots, each group's newest snapshot slot once read
	// or saved, so that neither SaveSnapshot nor SnapshotSlot reads (and
	// checksums) a whole snapshot of megabytes to learn one number.
	snapMu    sync.Mutex
	snapSlots map[paxos.GroupID]uint64
	// saveMu makes SaveSnapshot's "newer than the kept one?" check and its
	// write one step: the replica saves its own snapshots on a goroutine of
	// their own while it may install a peer's for the same group.
	saveMu sync.Mutex
}

var syncOpts = pebble.Sync

var _ paxos.Storage = (*Store)(nil)

// Open opens (or creates) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	reserve := opts.DiskReserve
	if reserve == 0 {
		reserve = 64 << 20
	}
	if err := checkSpace(fs, dir, reserve); err != nil {
		return nil, err
	}
	db, err := pebble.Open(dir, pebbleOptions(opts))
	if errors.Is(err, syscall.ENOSPC) {
		return nil, fmt.Errorf("%w: pebble cannot open %s: %w", ErrDiskFull, dir, err)
	}
	if err != nil && dirLocked(err) {
		return nil, fmt.Errorf("%w: %s: %w", ErrLocked, dir, err)
	}
	if err != nil {
		if openDamaged(err) {
			return nil, fmt.Errorf("%w: pebble cannot open %s (a damaged, cut or missing WAL, MANIFEST or sstable): %w", ErrDamaged, dir, err)
		}
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	s := &Store{db: db, dir: dir, lim: opts.Limits.WithDefaults(), fs: fs, reserve: reserve}
	f, ok, err := readStateFile(fs, dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.hwm.file, s.hwm.active = f, ok
	return s, nil
}

func pebbleOptions(opts Options) *pebble.Options {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	memtable := opts.MemTableSize
	if memtable == 0 {
		memtable = 64 << 20
	}
	po := &pebble.Options{
		FS: opts.FS,
		// Set explicitly, as pebble recommends: the default may change
		// with pebble versions. A database only ever moves up.
		FormatMajorVersion:          pebble.FormatNewest,
		MemTableSize:                memtable,
		MemTableStopWritesThreshold: 4,
		Logger:                      slogLogger{logger},
		EventListener: &pebble.EventListener{
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				logger.Warn("pebble: writes stalled", "reason", info.Reason)
			},
			WriteStallEnd: func() { logger.Info("pebble: writes resumed") },
			// pebble's default exits the process (Fatalf). The read that
			// met the corruption returns it too, and the node stops with
			// ErrDamaged from there.
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				logger.Error("pebble: on-disk corruption", "path", info.Path, "err", info.Details)
			},
		},
		// The WAL is on (DisableWAL false): it is what Save's sync makes
		// durable. No WALMinSyncInterval: a runtime step already batches
		// every group, and a delay there would delay every reply.
	}
	po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	return po
}

// Close closes the database. Every Save that returned is durable already;
// Close only releases resources.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	ferr := s.flushMarks()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebblestore: close %s: %w", s.dir, err)
	}
	return ferr
}

// Dir returns the directory the store was opened in.
func (s *Store) Dir() string { return s.dir }

// HardState implements paxos.Storage.
func (s *Store) HardState(g paxos.GroupID) (paxos.HardState, error) {
	if s.closed.Load() {
		return paxos.HardState{}, ErrClosed
	}
	var k [hardKeyLen]byte
	key := appendHardKey(k[:0], g)
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return paxos.HardState{}, nil
	}
	if err != nil {
		return paxos.HardState{}, readErr(fmt.Errorf("pebblestore: read hard state of group %d in %s: %w", g, s.dir, err))
	}
	defer closer.Close()
	rec, err := unseal(key, v)
	if err != nil {
		return paxos.HardState{}, fmt.Errorf("pebblestore: hard state of group %d in %s: %w", g, s.dir, err)
	}
	hs, err := paxos.DecodeHardState(rec)
	if err != nil {
		return paxos.HardState{}, fmt.Errorf("pebblestore: hard state of group %d in %s: %w", g, s.dir, err)
	}
	return hs, nil
}

// Entries implements paxos.Storage: g's stored entries with from <= slot <
// to, in slot order, at most max of them, in one bounded scan.
func (s *Store) Entries(g paxos.GroupID, from, to uint64, max int) ([]paxos.Entry, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if from >= to || max <= 0 {
		return nil, nil
	}
	var lo, hi [logKeyLen]byte
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: appendLogKey(lo[:0], g, from),
		UpperBound: appendLogKey(hi[:0], g, to), // exclusive, as is to
	})
	if err != nil {
		return nil, readErr(fmt.Errorf("pebblestore: read log of group %d in %s: %w", g, s.dir, err))
	}
	var out []paxos.Entry
	for ok := it.First(); ok && len(out) < max; ok = it.Next() {
		slot, kok := parseLogKey(it.Key(), g)
		if !kok {
			it.Close()
			return nil, fmt.Errorf("pebblestore: malformed log key %x in %s: %w", it.Key(), s.dir, paxos.ErrCorrupt)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, readErr(fmt.Errorf("pebblestore: read group %d slot %d in %s: %w", g, slot, s.dir, err))
		}
		rec, err := unseal(it.Key(), v)
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("pebblestore: group %d slot %d in %s: %w", g, slot, s.dir, err)
		}
		// DecodeEntryRecord copies: v is only valid until Next.
		e, err := paxos.DecodeEntryRecord(slot, rec, s.lim)
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("pebblestore: group %d slot %d in %s: %w", g, slot, s.dir, err)
		}
		out = append(out, e)
	}
	if err := it.Close(); err != nil {
		return nil, readErr(fmt.Errorf("pebblestore: read log of group %d in %s: %w", g, s.dir, err))
	}
	return out, nil
}

// Save writes every hard state and entry of writes in one pebble batch,
// committed with a sync. When it returns nil, all of it is durable; when the
// process dies during Save, either all of it survives or none of it does
// (pebble replays a batch from its WAL whole or not at all). This is the
// durability point of a runtime step: AfterSync messages may leave only after
// Save returned (paxos acceptor rule 4).
//
// Each entry replaces its slot's record. Entry.Chosen is not stored.
//
// Save also keeps the state file (LOCKD-STATE) at or below what pebble
// confirmed: after the synced commit returns, a higher promise is written
// to it before Save returns (see the package doc).
func (s *Store) Save(writes []paxos.GroupWrite) error {
	pre := s.pendingSnapshot()
	if err := s.save(writes, pebble.Sync); err != nil {
		return err
	}
	return s.confirm(pre, writes)
}

// SaveUnsynced writes like Save but without a sync: the write becomes
// durable with the next synced write (pebble's WAL keeps the order). The
// replica uses it only for writes that move commit indexes, which a crash
// may lose without harm.
func (s *Store) SaveUnsynced(writes []paxos.GroupWrite) error {
	if err := s.save(writes, pebble.NoSync); err != nil {
		return err
	}
	s.noteUnsynced(writes)
	return nil
}

// save is Save with the write options as a parameter, so that tests can
// commit without a sync and then simulate a crash.
func (s *Store) save(writes []paxos.GroupWrite, wo *pebble.WriteOptions) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkSpace(s.fs, s.dir, s.reserve); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.fill(b, writes); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	// Outside s.mu: concurrent Saves may then share one fsync in pebble's
	// commit pipeline.
	if err := b.Commit(wo); err != nil {
		return fmt.Errorf("pebblestore: commit %d group writes to %s: %w", len(writes), s.dir, err)
	}
	return nil
}

// fill encodes writes into b.
func (s *Store) fill(b *pebble.Batch, writes []paxos.GroupWrite) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var k [logKeyLen]byte
	for i := range writes {
		w := &writes[i]
		if w.Hard != nil {
			key := appendHardKey(k[:0], w.Group)
			s.buf = seal(paxos.AppendHardState(s.buf[:0], w.Hard), key, 0)
			if err := b.Set(key, s.buf, nil); err != nil {
				return fmt.Errorf("pebblestore: save hard state of group %d: %w", w.Group, err)
			}
		}
		for j := range w.Entries {
			e := &w.Entries[j]
			s.buf = paxos.AppendEntryRecord(s.buf[:0], e)
			if err := s.checkRecord(w.Group, e, s.buf); err != nil {
				return err
			}
			key := appendLogKey(k[:0], w.Group, e.Slot)
			s.buf = seal(s.buf, key, 0)
			if err := b.Set(key, s.buf, nil); err != nil {
				return fmt.Errorf("pebblestore: save group %d slot %d: %w", w.Group, e.Slot, err)
			}
		}
	}
	return nil
}

// checkRecord refuses a record that could not be read back under the
// store's limits; nothing of the Save is written then.
func (s *Store) checkRecord(g paxos.GroupID, e *paxos.Entry, rec []byte) error {
	why := ""
	switch {
	case len(rec) > s.lim.MaxMessageBytes:
		why = fmt.Sprintf("its record has %d bytes, the limit is %d (Limits.MaxMessageBytes)", len(rec), s.lim.MaxMessageBytes)
	case len(e.Value.Cmds) > s.lim.MaxCommands:
		why = fmt.Sprintf("its value has %d commands, the limit is %d (Limits.MaxCommands)", len(e.Value.Cmds), s.lim.MaxCommands)
	default:
		for i := range e.Value.Cmds {
			if n := len(e.Value.Cmds[i].Data); n > s.lim.MaxCommandBytes {
				why = fmt.Sprintf("command %d has %d bytes of data, the limit is %d (Limits.MaxCommandBytes)", i, n, s.lim.MaxCommandBytes)
				break
			}
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("pebblestore: refusing to save group %d slot %d, which could not be read back: %s; nothing of this save was written", g, e.Slot, why)
}

// DeleteBefore deletes g's log entries below slot, with one range deletion.
// It is for log truncation behind a snapshot.
//
// It does not sync: if the process dies first, the deleted entries may come
// back, which is harmless (they are chosen entries the snapshot covers, and
// the core reads the log only from its commit index on), and the next synced
// Save makes the deletion durable with it, as pebble's WAL is written in
// order.
func (s *Store) DeleteBefore(g paxos.GroupID, slot uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if slot == 0 {
		return nil
	}
	// The floor goes to the state file first: a check at start then never
	// misses slots that were deleted on purpose.
	if err := s.raiseFloor(g, slot); err != nil {
		return err
	}
	var lo, hi [logKeyLen]byte
	err := s.db.DeleteRange(appendLogKey(lo[:0], g, 0), appendLogKey(hi[:0], g, slot), pebble.NoSync)
	if err != nil {
		return fmt.Errorf("pebblestore: delete log of group %d below slot %d in %s: %w", g, slot, s.dir, err)
	}
	return nil
}

// readErr marks a read error that pebble found corruption in as ErrDamaged.
func readErr(err error) error {
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	return err
}

// ErrLocked is returned by Open for a data dir that another process (or
// another Store of this one) holds open: another lockd runs on it. Nothing
// is wrong with the dir.
var ErrLocked = errors.New("pebblestore: the data dir is locked by another process")

// dirLocked tells whether pebble.Open failed on the data dir's LOCK file.
// pebble reports a lock this process holds with a plain error text, and
// one another process holds with EAGAIN (flock); neither means damage, and
// calling either damage would tell the operator to wipe a healthy dir.
func dirLocked(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "lock held by")
}

// openDamaged tells whether pebble.Open failed on what it found in the
// directory, rather than on access to it (permissions, the lock another
// process holds, a full disk): then the data dir is damaged.
func openDamaged(err error) bool {
	if pebble.IsCorruptionError(err) {
		return true
	}
	for _, e := range []error{os.ErrPermission, syscall.EACCES, syscall.EAGAIN, syscall.EWOULDBLOCK, syscall.ENOSPC, syscall.EMFILE, syscall.ENOMEM, syscall.EROFS} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

// Flush writes pebble's memtable to sstables and makes it durable.
func (s *Store) Flush() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("pebblestore: flush %s: %w", s.dir, err)
	}
	return nil
}

// checkSpace returns ErrDiskFull when dir's disk has less than reserve bytes
// free. A file system that cannot tell (an in-memory one) passes.
func checkSpace(fs vfs.FS, dir string, reserve int64) error {
	if reserve < 0 {
		return nil
	}
	probe := dir
	for {
		u, err := fs.GetDiskUsage(probe)
		if err == nil {
			if u.AvailBytes < uint64(reserve) {
				return fmt.Errorf("%w: %s has %d bytes free, below the reserve of %d that lockd keeps so that its state stays intact",
					ErrDiskFull, dir, u.AvailBytes, reserve)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) || fs.PathDir(probe) == probe {
			return nil
		}
		probe = fs.PathDir(probe) // not created yet: ask its parent
	}
}

func appendHardKey(dst []byte, g paxos.GroupID) []byte {
	dst = append(dst, hardPrefix...)
	return binary.BigEndian.AppendUint32(dst, uint32(g))
}

func appendLogKey(dst []byte, g paxos.GroupID, slot uint64) []byte {
	dst = append(dst, logPrefix...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(g))
	dst = append(dst, '/')
	return binary.BigEndian.AppendUint64(dst, slot)
}

// parseLogKey returns the slot of a log key of group g.
func parseLogKey(k []byte, g paxos.GroupID) (uint64, bool) {
	if len(k) != logKeyLen || !bytes.HasPrefix(k, []byte(logPrefix)) || k[len(logPrefix)+4] != '/' ||
		binary.BigEndian.Uint32(k[len(logPrefix):]) != uint32(g) {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[len(logPrefix)+5:]), true
}

// slogLogger hands pebble's log to slog.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Infof(format string, args ...any) {
	if !s.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	s.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (s slogLogger) Errorf(format string, args ...any) {
	s.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf is called by pebble for errors it cannot continue after (a failed
// WAL sync among them: its outcome is unknown, so no later write may be
// trusted). pebble's own logger exits the process; this one logs and panics,
// which also stops the process but keeps the stack.
func (s slogLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	s.l.Error(msg)
	panic(msg)
}
