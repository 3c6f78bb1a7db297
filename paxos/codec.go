package paxos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Binary encodings of Message (the peer wire format), Entry (the on-disk log
// record) and HardState. Messages are at version 3, the stored forms at
// version 1:
//
//	message:      version=3, type byte, group, from, to, ballot, slot, commit,
//	              flags byte (bit 0: Behind, bit 1: Urgent, bit 2:
//	              Contended), entry count, entries
//	entry in msg: slot, ballot, flags byte (bit 0: Chosen), value
//	entry record: version=1, ballot, value (the slot is in the storage key;
//	              Chosen is not stored: below the commit index every slot is
//	              chosen, see HardState)
//	hard state:   version=1, promised ballot, commit
//	ballot:       round, node
//	value:        id ballot, id n, command count, commands
//	command:      client, seq, ack, data length, data bytes
//
// Every integer other than the bytes named above is an unsigned varint
// (encoding/binary) in its shortest form. The decoders accept only the
// shortest form and only the flag bits defined here, so every input that
// decodes has exactly one encoding: re-encoding it gives back the same bytes
// (the fuzz targets check this). A new field or meaning takes a new version
// byte; decoders refuse versions they do not know with ErrUnknownVersion.
// (Message version 1 had no Urgent bit, version 2 no Contended bit: a node
// of an older version refuses every message of this one with a clear error
// rather than some of them.)

// codecVersion is the version byte this build writes of stored entries and
// hard states, and the only one it reads; msgVersion the same for messages.
const (
	codecVersion = 1
	msgVersion   = 3
)

const (
	msgFlagBehind   = 1 << 0
	msgFlagUrgent   = 1 << 1
	msgFlagContend  = 1 << 2
	entryFlagChosen = 1 << 0
)

// Smallest encodings, used to refuse counts that the rest of the input cannot
// hold before anything is allocated for them.
const (
	minEntryBytes   = 8 // slot, round, node, flags, id round, id node, id n, count
	minCommandBytes = 4 // client, seq, ack, data length
)

// ErrCorrupt is wrapped by every decoding error: the input is truncated,
// malformed, not in the canonical encoding, or beyond the Limits. The error
// text says which field is wrong and where.
var ErrCorrupt = errors.New("paxos: corrupt or oversized encoding")

// ErrUnknownVersion is wrapped (together with ErrCorrupt) by decoding errors
// for an input whose version byte this build does not know, which usually
// means it was written by another version of lockd.
var ErrUnknownVersion = errors.New("paxos: unknown encoding version")

// Limits bounds what a decoder accepts, so that a hostile or corrupt input
// cannot make it allocate more than a small multiple of the input's size. A
// field of zero (or less) means the field's default (see DefaultLimits).
type Limits struct {
	// MaxMessageBytes bounds the size of one encoded message or entry record.
	MaxMessageBytes int
	// MaxEntries bounds the entries of one message.
	MaxEntries int
	// MaxCommands bounds the commands of one value (one entry).
	MaxCommands int
	// MaxCommandBytes bounds the data of one command.
	MaxCommandBytes int
}

// DefaultLimits returns the limits used for zero fields: 8 MiB per message,
// 4096 entries per message, 65536 commands per value and 1 MiB per command.
func DefaultLimits() Limits {
	return Limits{MaxMessageBytes: 8 << 20, MaxEntries: 4096, MaxCommands: 1 << 16, MaxCommandBytes: 1 << 20}
}

// WithDefaults returns l with every field of zero or less set to its
// default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	def := func(v *int, dv int) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&l.MaxMessageBytes, d.MaxMessageBytes)
	def(&l.MaxEntries, d.MaxEntries)
	def(&l.MaxCommands, d.MaxCommands)
	def(&l.MaxCommandBytes, d.MaxCommandBytes)
	return l
}

// AppendMessage appends the encoding of m to dst and returns the extended
// slice. It grows dst at most once.
func AppendMessage(dst []byte, m *Message) []byte {
	n := 80
	for i := range m.Entries {
		n += 64 + valueSizeBound(&m.Entries[i].Value)
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, msgVersion, byte(m.Type))
	dst = binary.AppendUvarint(dst, uint64(m.Group))
	dst = binary.AppendUvarint(dst, uint64(m.From))
	dst = binary.AppendUvarint(dst, uint64(m.To))
	dst = appendBallot(dst, m.Ballot)
	dst = binary.AppendUvarint(dst, m.Slot)
	dst = binary.AppendUvarint(dst, m.Commit)
	var flags byte
	if m.Behind {
		flags |= msgFlagBehind
	}
	if m.Urgent {
		flags |= msgFlagUrgent
	}
	if m.Contended {
		flags |= msgFlagContend
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(m.Entries)))
	for i := range m.Entries {
		e := &m.Entries[i]
		dst = binary.AppendUvarint(dst, e.Slot)
		dst = appendBallot(dst, e.Ballot)
		flags = 0
		if e.Chosen {
			flags |= entryFlagChosen
		}
		dst = append(dst, flags)
		dst = appendValue(dst, &e.Value)
	}
	return dst
}

// AppendEntryRecord appends the log record of e to dst: its ballot and value.
// The slot belongs in the storage key, and e.Chosen is not stored.
func AppendEntryRecord(dst []byte, e *Entry) []byte {
	dst = slices.Grow(dst, 16+valueSizeBound(&e.Value))
	dst = append(dst, codecVersion)
	dst = appendBallot(dst, e.Ballot)
	return appendValue(dst, &e.Value)
}

// AppendHardState appends the encoding of hs to dst.
func AppendHardState(dst []byte, hs *HardState) []byte {
	dst = append(dst, codecVersion)
	dst = appendBallot(dst, hs.Promised)
	return binary.AppendUvarint(dst, hs.Commit)
}

// valueSizeBound is at least the encoded size of v.
func valueSizeBound(v *Value) int {
	n := 40
	for i := range v.Cmds {
		n += 40 + len(v.Cmds[i].Data)
	}
	return n
}

func appendBallot(dst []byte, b Ballot) []byte {
	dst = binary.AppendUvarint(dst, b.Round)
	return binary.AppendUvarint(dst, uint64(b.Node))
}

func appendValue(dst []byte, v *Value) []byte {
	dst = appendBallot(dst, v.ID.Ballot)
	dst = binary.AppendUvarint(dst, v.ID.N)
	dst = binary.AppendUvarint(dst, uint64(len(v.Cmds)))
	for i := range v.Cmds {
		c := &v.Cmds[i]
		dst = binary.AppendUvarint(dst, c.ID.Client)
		dst = binary.AppendUvarint(dst, c.ID.Seq)
		dst = binary.AppendUvarint(dst, c.Ack)
		dst = binary.AppendUvarint(dst, uint64(len(c.Data)))
		dst = append(dst, c.Data...)
	}
	return dst
}

// DecodeMessage decodes one message that AppendMessage encoded; b must hold
// exactly that message. The result shares no memory with b: command data is
// copied, into one allocation for the whole message.
func DecodeMessage(b []byte, lim Limits) (Message, error) {
	lim = lim.WithDefaults()
	d := decoder{b: b, what: "message", version: msgVersion, entry: -1, cmd: -1}
	var m Message
	if !d.start(lim) {
		return m, d.err
	}
	t := d.byte("message type")
	if d.err == nil && (t == 0 || int(t) >= len(msgTypeNames)) {
		d.failf("unknown message type %d", t)
	}
	m.Type = MsgType(t)
	m.Group = GroupID(d.u32("group"))
	m.From = NodeID(d.u32("sender"))
	m.To = NodeID(d.u32("receiver"))
	m.Ballot = d.ballot()
	m.Slot = d.uvarint("slot")
	m.Commit = d.uvarint("commit index")
	flags := d.byte("message flags")
	if flags&^(msgFlagBehind|msgFlagUrgent|msgFlagContend) != 0 {
		d.failf("unknown message flags %#x", flags)
	}
	m.Behind = flags&msgFlagBehind != 0
	m.Urgent = flags&msgFlagUrgent != 0
	m.Contended = flags&msgFlagContend != 0
	n := d.count("number of entries", "entries", lim.MaxEntries, "Limits.MaxEntries", minEntryBytes)
	if d.err != nil {
		return Message{}, d.err
	}
	if n > 0 {
		m.Entries = make([]Entry, n)
	}
	for i := range m.Entries {
		d.entry = i
		e := &m.Entries[i]
		e.Slot = d.uvarint("entry slot")
		e.Ballot = d.ballot()
		flags := d.byte("entry flags")
		if flags&^entryFlagChosen != 0 {
			d.failf("unknown entry flags %#x", flags)
		}
		e.Chosen = flags&entryFlagChosen != 0
		d.value(&e.Value, lim)
		if d.err != nil {
			return Message{}, d.err
		}
	}
	d.entry = -1
	if !d.finish() {
		return Message{}, d.err
	}
	// Until here, command data aliases b; copy it out so that the caller may
	// reuse b.
	if d.data > 0 {
		buf := make([]byte, d.data)
		for i := range m.Entries {
			buf = detach(m.Entries[i].Value.Cmds, buf)
		}
	}
	return m, nil
}

// DecodeEntryRecord decodes the log record of slot that AppendEntryRecord
// encoded; b must hold exactly that record. The result has Chosen unset and
// shares no memory with b.
func DecodeEntryRecord(slot uint64, b []byte, lim Limits) (Entry, error) {
	lim = lim.WithDefaults()
	d := decoder{b: b, what: "entry record", version: codecVersion, entry: -1, cmd: -1, recordSlot: slot, inRecord: true}
	e := Entry{Slot: slot}
	if !d.start(lim) {
		return Entry{}, d.err
	}
	e.Ballot = d.ballot()
	d.value(&e.Value, lim)
	if !d.finish() {
		return Entry{}, d.err
	}
	if d.data > 0 {
		detach(e.Value.Cmds, make([]byte, d.data))
	}
	return e, nil
}

// DecodeHardState decodes a hard state that AppendHardState encoded; b must
// hold exactly that.
func DecodeHardState(b []byte) (HardState, error) {
	d := decoder{b: b, what: "hard state", version: codecVersion, entry: -1, cmd: -1}
	var hs HardState
	if !d.start(Limits{MaxMessageBytes: 64}) {
		return hs, d.err
	}
	hs.Promised = d.ballot()
	hs.Commit = d.uvarint("commit index")
	if !d.finish() {
		return HardState{}, d.err
	}
	return hs, nil
}

// detach copies the data of cmds into buf, points each command at its copy,
// and returns the rest of buf. Each copy is capped, so that appending to one
// command's data never overwrites the next one's.
func detach(cmds []Command, buf []byte) []byte {
	for j := range cmds {
		c := &cmds[j]
		if len(c.Data) == 0 {
			continue
		}
		n := copy(buf, c.Data)
		c.Data = buf[:n:n]
		buf = buf[n:]
	}
	return buf
}

// decoder reads one encoding front to back. The first error sticks: later
// reads return zero values, so a caller checks d.err only before it allocates
// or returns. Error text is built only on failure.
type decoder struct {
	b   []byte
	off int
	err error

	what       string // "message", "entry record" or "hard state"
	version    byte   // the only version byte it reads
	entry, cmd int    // position for error text, -1 outside any
	recordSlot uint64 // the slot of an entry record
	inRecord   bool
	data       int // bytes of command data seen so far (still aliasing b)
}

// decodeError carries a decoding failure; it matches ErrCorrupt and, for an
// unknown version, ErrUnknownVersion.
type decodeError struct {
	msg     string
	version bool
}

func (e *decodeError) Error() string { return e.msg }

func (e *decodeError) Is(target error) bool {
	return target == ErrCorrupt || (e.version && target == ErrUnknownVersion)
}

func (d *decoder) failf(format string, args ...any) {
	if d.err == nil {
		d.err = &decodeError{msg: "paxos: decode " + d.what + ": " + fmt.Sprintf(format, args...)}
	}
}

// where names the part of the input being decoded, for error text.
func (d *decoder) where() string {
	var s string
	switch {
	case d.inRecord:
		s = fmt.Sprintf(" in the record of slot %d", d.recordSlot)
	case d.entry >= 0:
		s = fmt.Sprintf(" in entry %d", d.entry)
	}
	if d.cmd >= 0 {
		s += fmt.Sprintf(" command %d", d.cmd)
	}
	return s
}

// start checks the size and the version byte.
func (d *decoder) start(lim Limits) bool {
	switch {
	case len(d.b) == 0:
		d.failf("empty input")
	case len(d.b) > lim.MaxMessageBytes:
		d.failf("%s of %d bytes, the limit is %d (Limits.MaxMessageBytes)", d.what, len(d.b), lim.MaxMessageBytes)
	case d.b[0] != d.version:
		d.failf("unknown format version %d (this build reads version %d; was it written by another lockd version?)", d.b[0], d.version)
		d.err.(*decodeError).version = true
	default:
		d.off = 1
	}
	return d.err == nil
}

// finish refuses trailing bytes.
func (d *decoder) finish() bool {
	if d.err == nil && d.off != len(d.b) {
		d.failf("%d bytes of trailing garbage after the %s (at offset %d)", len(d.b)-d.off, d.what, d.off)
	}
	return d.err == nil
}

func (d *decoder) truncated(field string) {
	d.failf("input ends inside %s%s (offset %d of %d)", field, d.where(), d.off, len(d.b))
}

func (d *decoder) byte(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.truncated(field)
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	if d.off < len(d.b) && d.b[d.off] < 0x80 {
		v := d.b[d.off]
		d.off++
		return uint64(v)
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.truncated(field)
		return 0
	case n < 0:
		d.failf("%s%s overflows 64 bits (offset %d)", field, d.where(), d.off)
		return 0
	case d.b[d.off+n-1] == 0:
		// n >= 2 here: a one-byte varint took the fast path above. A last
		// byte of zero adds nothing, so a shorter encoding exists.
		d.failf("%s%s is not in its shortest encoding (offset %d)", field, d.where(), d.off)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u32(field string) uint32 {
	v := d.uvarint(field)
	if v > math.MaxUint32 {
		d.failf("%s%s is %d, which does not fit in 32 bits", field, d.where(), v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) ballot() Ballot {
	return Ballot{Round: d.uvarint("ballot round"), Node: NodeID(d.u32("ballot node"))}
}

// count reads the number of items of a list, and checks it against the limit
// and against what the rest of the input can hold (each item takes at least
// minBytes), before the caller allocates for it.
func (d *decoder) count(field, items string, limit int, limitName string, minBytes int) int {
	v := d.uvarint(field)
	if d.err != nil {
		return 0
	}
	left := len(d.b) - d.off
	switch {
	case v > uint64(limit):
		d.failf("%d %s%s, the limit is %d (%s)", v, items, d.where(), limit, limitName)
	case v > uint64(left/minBytes):
		d.failf("%d %s%s, but only %d bytes are left (each takes at least %d)", v, items, d.where(), left, minBytes)
	}
	if d.err != nil {
		return 0
	}
	return int(v)
}

// value decodes a value into v. Command data still aliases d.b.
func (d *decoder) value(v *Value, lim Limits) {
	v.ID.Ballot = d.ballot()
	v.ID.N = d.uvarint("value id")
	n := d.count("number of commands", "commands", lim.MaxCommands, "Limits.MaxCommands", minCommandBytes)
	if d.err != nil || n == 0 {
		return
	}
	v.Cmds = make([]Command, n)
	for j := range v.Cmds {
		d.cmd = j
		c := &v.Cmds[j]
		c.ID.Client = d.uvarint("client id")
		c.ID.Seq = d.uvarint("sequence number")
		c.Ack = d.uvarint("ack")
		l := d.uvarint("data length")
		if d.err != nil {
			return
		}
		switch left := len(d.b) - d.off; {
		case l > uint64(lim.MaxCommandBytes):
			d.failf("command data of %d bytes%s, the limit is %d (Limits.MaxCommandBytes)", l, d.where(), lim.MaxCommandBytes)
			return
		case l > uint64(left):
			d.failf("command data of %d bytes%s, but only %d bytes are left", l, d.where(), left)
			return
		}
		if l > 0 {
			c.Data = d.b[d.off : d.off+int(l)]
			d.off += int(l)
			d.data += int(l)
		}
	}
	d.cmd = -1
}
