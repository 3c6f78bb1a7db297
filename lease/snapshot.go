package lease

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"time"
)

const (
	snapshotMagic   = "LKDT"
	snapshotVersion = 2
	// snapshotVersionNoOwner is the layout before session owners: it is still read
	// (its sessions have no owner, so anyone may act under them).
	snapshotVersionNoOwner = 1
	// snapshotOverhead is the magic, the version byte and the trailing checksum.
	snapshotOverhead = len(snapshotMagic) + 1 + 4
	flagStarted      = 1 << 0
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Smallest encodings of the records in a snapshot, used to refuse counts the remaining
// bytes cannot hold before anything is allocated for them.
const (
	minSessionBytes = 4 // id, client, ttl, opened
	minLockBytes    = 6 // name length and one byte, flags, delay, two counts
	minHolderBytes  = 5 // session, token, since, lock-delay, metadata length
	minWaiterBytes  = 5 // session, flags, since, lock-delay, metadata length
)

// Snapshot returns the whole table as bytes that Restore accepts. Tables with the same
// history return identical bytes: sessions are written by ID, locks by name, holders in
// grant order and waiters in queue order, and nothing else is written (the indexes and
// counters Restore needs are derived from these).
//
// Layout: "LKDT", version byte, then flags (bit 0: a command was applied), the last
// position (slot, index), the clock, the last token and session ID, the limits, the
// sessions (count, then id, client, ttl, opened, owner; version 1 has no owner), the locks (count, then name, flags
// (bit 0: shared), delay end, holders (count, then session, token, since, lock-delay,
// metadata), waiters (count, then session, flags (bit 0: shared), since, lock-delay,
// metadata)), and last the CRC-32C of all bytes before it, little-endian. Integers are
// minimal varints, zigzag for signed ones; strings are length-prefixed.
func (t *Table) Snapshot() []byte { return t.snapshot(snapshotVersion) }

// snapshot writes the layout of version v (tests write version 1, without owners).
func (t *Table) snapshot(v byte) []byte { return t.freeze(v).Encode() }

// Frozen is a table's state captured for a snapshot: a copy that no later
// Apply changes, so that the costly part of a snapshot (sorting and
// encoding, most of the time for a large table) can run on another
// goroutine while the table goes on applying commands. Encode returns the
// bytes Snapshot would have returned at the moment of Freeze.
type Frozen struct {
	v           byte
	started     bool
	applied     Position
	now         int64
	lastToken   uint64
	lastSession uint64
	limits      Limits
	sessions    []frozenSession
	locks       []frozenLock
	entries     []frozenEntry // every lock's holders, then its waiters
}

type frozenSession struct {
	id, client uint64
	ttl        time.Duration
	opened     int64
	owner      string
}

type frozenLock struct {
	name         string
	shared       bool
	delayUntil   int64
	first        int // index of its first holder in entries
	nHold, nWait int
}

// frozenEntry is a holder (token set) or a waiter (shared set).
type frozenEntry struct {
	session   uint64
	token     uint64
	since     int64
	lockDelay time.Duration
	meta      string
	shared    bool
}

// Freeze captures the table for Encode. It copies every session and lock
// (strings are shared: they never change) without sorting or encoding.
func (t *Table) Freeze() *Frozen { return t.freeze(snapshotVersion) }

func (t *Table) freeze(v byte) *Frozen {
	f := &Frozen{v: v, started: t.started, applied: t.applied, now: t.now, lastToken: t.lastToken,
		lastSession: t.lastSession, limits: t.limits,
		sessions: make([]frozenSession, 0, len(t.sessions)), locks: make([]frozenLock, 0, len(t.locks))}
	for _, s := range t.sessions {
		f.sessions = append(f.sessions, frozenSession{id: s.id, client: s.client, ttl: s.ttl, opened: s.opened, owner: s.owner})
	}
	n := 0
	for _, l := range t.locks {
		n += len(l.holders) + len(l.waiters)
	}
	f.entries = make([]frozenEntry, 0, n)
	for _, l := range t.locks {
		fl := frozenLock{name: l.name, shared: l.shared, delayUntil: l.delayUntil, first: len(f.entries), nHold: len(l.holders), nWait: len(l.waiters)}
		for _, h := range l.holders {
			f.entries = append(f.entries, frozenEntry{session: h.s.id, token: h.token, since: h.since, lockDelay: h.lockDelay, meta: h.meta})
		}
		for _, w := range l.waiters {
			f.entries = append(f.entries, frozenEntry{session: w.s.id, since: w.since, lockDelay: w.lockDelay, meta: w.meta, shared: w.shared})
		}
		f.locks = append(f.locks, fl)
	}
	return f
}

// Encode sorts and encodes the captured state (the layout above). It may
// run on any goroutine, once or more.
func (f *Frozen) Encode() []byte {
	sessions := slices.Clone(f.sessions)
	slices.SortFunc(sessions, func(a, b frozenSession) int { return cmp.Compare(a.id, b.id) })
	locks := slices.Clone(f.locks)
	slices.SortFunc(locks, func(a, b frozenLock) int { return strings.Compare(a.name, b.name) })
	size := 64 + 8*len(sessions)
	for i := range locks {
		size += 8 + len(locks[i].name) + 16*(locks[i].nHold+locks[i].nWait)
	}

	b := make([]byte, 0, size)
	b = append(b, snapshotMagic...)
	b = append(b, f.v)
	var flags byte
	if f.started {
		flags |= flagStarted
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, f.applied.Slot)
	b = binary.AppendUvarint(b, uint64(f.applied.Index))
	b = binary.AppendVarint(b, f.now)
	b = binary.AppendUvarint(b, f.lastToken)
	b = binary.AppendUvarint(b, f.lastSession)
	b = appendLimits(b, f.limits)

	b = binary.AppendUvarint(b, uint64(len(sessions)))
	for _, s := range sessions {
		b = binary.AppendUvarint(b, s.id)
		b = binary.AppendUvarint(b, s.client)
		b = binary.AppendVarint(b, int64(s.ttl))
		b = binary.AppendVarint(b, s.opened)
		if f.v >= snapshotVersion {
			b = appendString(b, s.owner)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(locks)))
	for _, l := range locks {
		b = appendString(b, l.name)
		b = append(b, boolByte(l.shared))
		b = binary.AppendVarint(b, l.delayUntil)
		b = binary.AppendUvarint(b, uint64(l.nHold))
		for _, h := range f.entries[l.first : l.first+l.nHold] {
			b = binary.AppendUvarint(b, h.session)
			b = binary.AppendUvarint(b, h.token)
			b = binary.AppendVarint(b, h.since)
			b = binary.AppendVarint(b, int64(h.lockDelay))
			b = appendString(b, h.meta)
		}
		b = binary.AppendUvarint(b, uint64(l.nWait))
		for _, w := range f.entries[l.first+l.nHold : l.first+l.nHold+l.nWait] {
			b = binary.AppendUvarint(b, w.session)
			b = append(b, boolByte(w.shared))
			b = binary.AppendVarint(b, w.since)
			b = binary.AppendVarint(b, int64(w.lockDelay))
			b = appendString(b, w.meta)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// Restore replaces the whole table, limits included, with the snapshot b. It first
// decodes and checks everything (checksum, version, bounds, canonical form, and every
// invariant listed on Table), and only then switches: on error the table is unchanged.
// Allocation is bounded by len(b). Errors wrap ErrMalformed or ErrVersion.
func (t *Table) Restore(b []byte) error {
	nt, err := decodeSnapshot(b)
	if err != nil {
		return err
	}
	hook := t.ownerHook
	t.countAll(-1)
	*t = *nt
	t.ownerHook = hook
	t.countAll(1)
	return nil
}

func decodeSnapshot(b []byte) (*Table, error) {
	if len(b) < snapshotOverhead || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: snapshot: not a lock table snapshot (bad magic or %d bytes)", ErrMalformed, len(b))
	}
	v := b[len(snapshotMagic)]
	if v != snapshotVersion && v != snapshotVersionNoOwner {
		return nil, fmt.Errorf("%w: snapshot version %d, this build reads %d and %d: upgrade this node", ErrVersion, v, snapshotVersionNoOwner, snapshotVersion)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("%w: snapshot: checksum %08x, computed %08x: the snapshot is corrupt, fetch it again", ErrMalformed, sum, got)
	}
	r := &reader{b: body, off: len(snapshotMagic) + 1, what: "snapshot"}
	d := snapshotDecoder{r: r, owners: v >= snapshotVersion}
	t := d.table()
	r.end()
	if r.err != nil {
		return nil, r.err
	}
	return t, nil
}

// snapshotDecoder rebuilds a Table from a snapshot body and checks it as it goes.
type snapshotDecoder struct {
	r      *reader
	t      *Table
	owners bool // the sessions carry their owner (version 2)
}

func (d *snapshotDecoder) table() *Table {
	r := d.r
	t := &Table{}
	d.t = t
	flags := r.u8("flags")
	if flags&^flagStarted != 0 {
		r.fail("flags", "unknown flags %#x", flags)
	}
	t.started = flags&flagStarted != 0
	t.applied.Slot = r.uvarint("slot")
	index := r.uvarint("index")
	if index > math.MaxUint32 {
		r.fail("index", "index %d exceeds 32 bits", index)
	}
	t.applied.Index = uint32(index)
	if !t.started && t.applied != (Position{}) {
		r.fail("slot", "position %v without any command applied", t.applied)
	}
	t.now = r.nonNegative("now")
	t.lastToken = r.uvarint("last-token")
	t.lastSession = r.uvarint("last-session")
	t.limits = r.limits()
	if r.err == nil {
		if err := t.limits.Validate(); err != nil {
			r.fail("limits", "%v", err)
		}
	}

	minSession := minSessionBytes
	if d.owners {
		minSession++
	}
	n := r.count("sessions", minSession)
	t.sessions = make(map[uint64]*session, n)
	t.clients = make(map[uint64]uint32)
	var prev uint64
	for i := 0; i < n && r.err == nil; i++ {
		s := &session{id: r.uvarint("session-id"), client: r.uvarint("client")}
		s.ttl = time.Duration(r.varint("ttl"))
		s.opened = r.nonNegative("opened")
		if d.owners {
			s.owner = string(r.bytes("owner", IdentityBytesCeiling))
		}
		switch {
		case s.id <= prev || s.id > t.lastSession:
			r.fail("session-id", "session %d out of order or above the last issued %d", s.id, t.lastSession)
		case s.ttl <= 0 || s.ttl > TTLCeiling:
			r.fail("ttl", "session %d has ttl %v", s.id, s.ttl)
		case s.opened > t.now:
			r.fail("opened", "session %d opened after the clock", s.id)
		}
		prev = s.id
		t.sessions[s.id] = s
		t.clients[s.client]++
	}

	n = r.count("locks", minLockBytes)
	t.locks = make(map[string]*lock, n)
	var prevName string
	for i := 0; i < n && r.err == nil; i++ {
		l := d.lock()
		if r.err == nil && i > 0 && l.name <= prevName {
			r.fail("name", "lock %q is not after %q", l.name, prevName)
		}
		prevName = l.name
		t.locks[l.name] = l
		if l.delayUntil != 0 {
			t.delays = append(t.delays, delayEntry{at: l.delayUntil, l: l})
			t.delayed++
		}
	}
	t.delays.init()
	return t
}

func (d *snapshotDecoder) lock() *lock {
	r, t := d.r, d.t
	name := r.bytes("name", NameBytesCeiling)
	if r.err == nil && len(name) == 0 {
		r.fail("name", "empty lock name")
	}
	l := &lock{name: string(name)}
	flags := r.u8("lock-flags")
	if flags&^1 != 0 {
		r.fail("lock-flags", "unknown flags %#x", flags)
	}
	l.shared = flags&1 != 0
	l.delayUntil = r.nonNegative("delay-until")
	if r.err == nil && l.delayUntil != 0 && l.delayUntil <= t.now {
		r.fail("delay-until", "lock %q has a lock-delay that ended before the clock", l.name)
	}

	n := r.count("holders", minHolderBytes)
	if n > 0 {
		l.holders = make([]holder, 0, n)
	}
	var prevToken uint64
	for i := 0; i < n && r.err == nil; i++ {
		s := d.member(l)
		h := holder{s: s, token: r.uvarint("token"), since: d.since(), lockDelay: d.lockDelay()}
		h.meta = string(r.bytes("metadata", MetadataBytesCeiling))
		if r.err == nil && (h.token <= prevToken || h.token > t.lastToken) {
			r.fail("token", "lock %q: token %d not above %d or above the last issued %d", l.name, h.token, prevToken, t.lastToken)
		}
		prevToken = h.token
		if r.err != nil {
			break
		}
		l.holders = append(l.holders, h)
		s.held = append(s.held, l)
		t.holders++
	}
	if r.err == nil && ((len(l.holders) == 0 && l.shared) || (len(l.holders) > 1 && !l.shared)) {
		r.fail("lock-flags", "lock %q: mode does not fit %d holders", l.name, len(l.holders))
	}

	n = r.count("waiters", minWaiterBytes)
	if n > 0 {
		l.waiters = make([]waiter, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		s := d.member(l)
		wf := r.u8("waiter-flags")
		if wf&^1 != 0 {
			r.fail("waiter-flags", "unknown flags %#x", wf)
		}
		w := waiter{s: s, shared: wf&1 != 0, since: d.since(), lockDelay: d.lockDelay()}
		w.meta = string(r.bytes("metadata", MetadataBytesCeiling))
		if r.err != nil {
			break
		}
		l.waiters = append(l.waiters, w)
		s.waits = append(s.waits, l)
		t.waiters++
	}
	if r.err != nil {
		return l
	}
	switch {
	case len(l.holders) == 0 && len(l.waiters) == 0 && l.delayUntil == 0:
		r.fail("lock", "lock %q has no holder, no waiter and no lock-delay", l.name)
	case len(l.waiters) > 0 && l.delayUntil == 0 && l.compatible(l.waiters[0].shared):
		r.fail("lock", "lock %q has a first waiter that should have been granted", l.name)
	}
	return l
}

// member reads the session of a holder or waiter of l: it must be open, and not yet in
// l. The second holds because l is the newest entry of the session's lists while l's
// members are read.
func (d *snapshotDecoder) member(l *lock) *session {
	r := d.r
	id := r.uvarint("member")
	if r.err != nil {
		return nil
	}
	s := d.t.sessions[id]
	switch {
	case s == nil:
		r.fail("member", "lock %q names session %d, which is not open", l.name, id)
	case len(s.held) > 0 && s.held[len(s.held)-1] == l, len(s.waits) > 0 && s.waits[len(s.waits)-1] == l:
		r.fail("member", "lock %q names session %d twice", l.name, id)
	}
	return s
}

func (d *snapshotDecoder) since() int64 {
	v := d.r.nonNegative("since")
	if v > d.t.now {
		d.r.fail("since", "time %d after the clock %d", v, d.t.now)
	}
	return v
}

func (d *snapshotDecoder) lockDelay() time.Duration {
	v := d.r.nonNegative("lock-delay")
	if v > int64(LockDelayCeiling) {
		d.r.fail("lock-delay", "lock-delay %v above the ceiling %v", time.Duration(v), LockDelayCeiling)
	}
	return time.Duration(v)
}
