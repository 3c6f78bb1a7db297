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
package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

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
}

var _ paxos.Storage = (*Store)(nil)

// Open opens (or creates) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	db, err := pebble.Open(dir, pebbleOptions(opts))
	if err != nil {
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	return &Store{db: db, dir: dir, lim: opts.Limits.WithDefaults()}, nil
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
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebblestore: close %s: %w", s.dir, err)
	}
	return nil
}

// Dir returns the directory the store was opened in.
func (s *Store) Dir() string { return s.dir }

// HardState implements paxos.Storage.
func (s *Store) HardState(g paxos.GroupID) (paxos.HardState, error) {
	if s.closed.Load() {
		return paxos.HardState{}, ErrClosed
	}
	var k [hardKeyLen]byte
	v, closer, err := s.db.Get(appendHardKey(k[:0], g))
	if errors.Is(err, pebble.ErrNotFound) {
		return paxos.HardState{}, nil
	}
	if err != nil {
		return paxos.HardState{}, fmt.Errorf("pebblestore: read hard state of group %d in %s: %w", g, s.dir, err)
	}
	defer closer.Close()
	hs, err := paxos.DecodeHardState(v)
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
		return nil, fmt.Errorf("pebblestore: read log of group %d in %s: %w", g, s.dir, err)
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
			return nil, fmt.Errorf("pebblestore: read group %d slot %d in %s: %w", g, slot, s.dir, err)
		}
		// DecodeEntryRecord copies: v is only valid until Next.
		e, err := paxos.DecodeEntryRecord(slot, v, s.lim)
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("pebblestore: group %d slot %d in %s: %w", g, slot, s.dir, err)
		}
		out = append(out, e)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("pebblestore: read log of group %d in %s: %w", g, s.dir, err)
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
func (s *Store) Save(writes []paxos.GroupWrite) error {
	return s.save(writes, pebble.Sync)
}

// SaveUnsynced writes like Save but without a sync: the write becomes
// durable with the next synced write (pebble's WAL keeps the order). The
// replica uses it only for writes that move commit indexes, which a crash
// may lose without harm.
func (s *Store) SaveUnsynced(writes []paxos.GroupWrite) error {
	return s.save(writes, pebble.NoSync)
}

// save is Save with the write options as a parameter, so that tests can
// commit without a sync and then simulate a crash.
func (s *Store) save(writes []paxos.GroupWrite, wo *pebble.WriteOptions) error {
	if s.closed.Load() {
		return ErrClosed
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
			s.buf = paxos.AppendHardState(s.buf[:0], w.Hard)
			if err := b.Set(appendHardKey(k[:0], w.Group), s.buf, nil); err != nil {
				return fmt.Errorf("pebblestore: save hard state of group %d: %w", w.Group, err)
			}
		}
		for j := range w.Entries {
			e := &w.Entries[j]
			s.buf = paxos.AppendEntryRecord(s.buf[:0], e)
			if err := s.checkRecord(w.Group, e, s.buf); err != nil {
				return err
			}
			if err := b.Set(appendLogKey(k[:0], w.Group, e.Slot), s.buf, nil); err != nil {
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
	var lo, hi [logKeyLen]byte
	err := s.db.DeleteRange(appendLogKey(lo[:0], g, 0), appendLogKey(hi[:0], g, slot), pebble.NoSync)
	if err != nil {
		return fmt.Errorf("pebblestore: delete log of group %d below slot %d in %s: %w", g, slot, s.dir, err)
	}
	return nil
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
