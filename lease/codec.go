package lease

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// commandVersion is the first byte of every encoded Command without a Caller;
// commandVersionCaller is that of one with a Caller or Admin, which follow the
// version-1 layout. A command without them keeps the version-1 bytes.
const (
	commandVersion       = 1
	commandVersionCaller = 2
	flagAdmin            = 1 << 0
)

// Flag bits of an encoded acquire. Bits not listed must be zero.
const (
	flagShared = 1 << 0
	flagWait   = 1 << 1
)

// Encode returns the canonical encoding of c. Only the fields c.Op reads are written.
func (c Command) Encode() []byte {
	return c.AppendTo(make([]byte, 0, 24+len(c.Name)+len(c.Metadata)))
}

// AppendTo appends the canonical encoding of c to b and returns the extended slice.
//
// Layout: version byte, op byte, Now (zigzag varint), then per op: OpOpenSession
// Client (uvarint) TTL (varint); OpCloseSession, OpExpireSession Session;
// OpAcquire Session, Name, flags byte, LockDelay, Metadata; OpRelease Session, Name,
// Token; OpCancelWait Session, Name; OpTick nothing; OpSetLimits the eight Limits
// fields in declaration order; OpRaiseTokenFloor Token. Strings are a uvarint length then the bytes. Every
// varint is minimal, which is what makes the encoding canonical: DecodeCommand accepts
// exactly the bytes AppendTo can produce.
//
// Version 2 (a command with a Caller or Admin) appends Caller (a string) and a
// flags byte (bit 0: Admin).
func (c Command) AppendTo(b []byte) []byte {
	v := byte(commandVersion)
	if c.Caller != "" || c.Admin {
		v = commandVersionCaller
	}
	b = append(b, v, byte(c.Op))
	b = binary.AppendVarint(b, c.Now)
	switch c.Op {
	case OpOpenSession:
		b = binary.AppendUvarint(b, c.Client)
		b = binary.AppendVarint(b, int64(c.TTL))
	case OpCloseSession, OpExpireSession:
		b = binary.AppendUvarint(b, c.Session)
	case OpAcquire:
		b = binary.AppendUvarint(b, c.Session)
		b = appendString(b, c.Name)
		var flags byte
		if c.Shared {
			flags |= flagShared
		}
		if c.Wait {
			flags |= flagWait
		}
		b = append(b, flags)
		b = binary.AppendVarint(b, int64(c.LockDelay))
		b = binary.AppendUvarint(b, uint64(len(c.Metadata)))
		b = append(b, c.Metadata...)
	case OpRelease:
		b = binary.AppendUvarint(b, c.Session)
		b = appendString(b, c.Name)
		b = binary.AppendUvarint(b, c.Token)
	case OpCancelWait:
		b = binary.AppendUvarint(b, c.Session)
		b = appendString(b, c.Name)
	case OpSetLimits:
		b = appendLimits(b, c.Limits)
	case OpRaiseTokenFloor:
		b = binary.AppendUvarint(b, c.Token)
	}
	if v == commandVersionCaller {
		b = appendString(b, c.Caller)
		var flags byte
		if c.Admin {
			flags |= flagAdmin
		}
		b = append(b, flags)
	}
	return b
}

// DecodeCommand decodes one Command written by AppendTo. It never panics, and it
// allocates at most the name and metadata, each bounded by the bytes present and by
// NameBytesCeiling or MetadataBytesCeiling. Any trailing byte, unknown op or flag, or
// non-minimal varint is an error wrapping ErrMalformed; a version byte from a newer
// build is an error wrapping ErrVersion.
func DecodeCommand(b []byte) (Command, error) {
	r := reader{b: b, what: "command"}
	var c Command
	v := r.u8("version")
	if r.err == nil && v != commandVersion && v != commandVersionCaller {
		return Command{}, fmt.Errorf("%w: command version %d, this build reads %d and %d: upgrade this node", ErrVersion, v, commandVersion, commandVersionCaller)
	}
	c.Op = Op(r.u8("op"))
	c.Now = r.varint("now")
	if r.err == nil && (c.Op < 1 || c.Op > maxOp) {
		r.fail("op", "unknown op %d", c.Op)
	}
	switch c.Op {
	case OpOpenSession:
		c.Client = r.uvarint("client")
		c.TTL = time.Duration(r.varint("ttl"))
	case OpCloseSession, OpExpireSession:
		c.Session = r.uvarint("session")
	case OpAcquire:
		c.Session = r.uvarint("session")
		c.Name = string(r.bytes("name", NameBytesCeiling))
		flags := r.u8("flags")
		if flags&^(flagShared|flagWait) != 0 {
			r.fail("flags", "unknown flags %#x", flags)
		}
		c.Shared = flags&flagShared != 0
		c.Wait = flags&flagWait != 0
		c.LockDelay = time.Duration(r.varint("lock-delay"))
		if m := r.bytes("metadata", MetadataBytesCeiling); len(m) > 0 {
			c.Metadata = append([]byte(nil), m...)
		}
	case OpRelease:
		c.Session = r.uvarint("session")
		c.Name = string(r.bytes("name", NameBytesCeiling))
		c.Token = r.uvarint("token")
	case OpCancelWait:
		c.Session = r.uvarint("session")
		c.Name = string(r.bytes("name", NameBytesCeiling))
	case OpSetLimits:
		c.Limits = r.limits()
	case OpRaiseTokenFloor:
		c.Token = r.uvarint("token")
	}
	if v == commandVersionCaller {
		c.Caller = string(r.bytes("caller", IdentityBytesCeiling))
		flags := r.u8("caller-flags")
		if flags&^flagAdmin != 0 {
			r.fail("caller-flags", "unknown flags %#x", flags)
		}
		c.Admin = flags&flagAdmin != 0
		if r.err == nil && c.Caller == "" && !c.Admin {
			r.fail("caller", "version 2 without a caller or admin flag is not canonical")
		}
	}
	r.end()
	if r.err != nil {
		return Command{}, r.err
	}
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendLimits writes the counts as uvarints and the durations as varints, so that any
// Limits value encodes; validity is checked where limits are used, not here.
func appendLimits(b []byte, l Limits) []byte {
	for _, n := range [...]int{l.MaxNameBytes, l.MaxMetadataBytes, l.MaxLocksPerSession,
		l.MaxSessionsPerClient, l.MaxWaitersPerLock} {
		b = binary.AppendVarint(b, int64(n))
	}
	for _, d := range [...]time.Duration{l.MinTTL, l.MaxTTL, l.MaxLockDelay} {
		b = binary.AppendVarint(b, int64(d))
	}
	return b
}

// reader decodes the primitives of both formats. The first error sticks: later calls
// return zero values, so decoding code can read a whole record and check r.err once.
type reader struct {
	b    []byte
	off  int
	err  error
	what string // "command" or "snapshot", for error messages
}

func (r *reader) fail(field, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s at byte %d: %s", ErrMalformed, r.what, field, r.off, fmt.Sprintf(format, args...))
	}
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) u8(field string) byte {
	if r.err != nil {
		return 0
	}
	if r.left() < 1 {
		r.fail(field, "truncated")
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	switch {
	case n == 0:
		r.fail(field, "truncated")
		return 0
	case n < 0:
		r.fail(field, "varint overflows 64 bits")
		return 0
	case n > 1 && r.b[r.off+n-1] == 0:
		// A last byte of zero adds nothing: a shorter encoding exists.
		r.fail(field, "varint is not minimal")
		return 0
	}
	r.off += n
	return v
}

// varint reads a zigzag varint (binary.AppendVarint).
func (r *reader) varint(field string) int64 {
	u := r.uvarint(field)
	return int64(u>>1) ^ -int64(u&1)
}

// nonNegative reads a varint that must be at least 0.
func (r *reader) nonNegative(field string) int64 {
	v := r.varint(field)
	if v < 0 {
		r.fail(field, "negative value %d", v)
		return 0
	}
	return v
}

// bytes reads a length-prefixed byte string of at most max bytes. The result aliases
// the input; callers copy what they keep.
func (r *reader) bytes(field string, max int) []byte {
	n := r.uvarint(field)
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.fail(field, "length %d exceeds the ceiling %d", n, max)
		return nil
	}
	if n > uint64(r.left()) {
		r.fail(field, "length %d but only %d bytes left", n, r.left())
		return nil
	}
	v := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return v
}

// count reads the number of records that follow, each at least minSize bytes long, and
// refuses counts the remaining input cannot hold. That bound is what keeps the decoders
// from allocating more than the input justifies.
func (r *reader) count(field string, minSize int) int {
	n := r.uvarint(field)
	if r.err != nil {
		return 0
	}
	if n > uint64(r.left()/minSize) {
		r.fail(field, "count %d cannot fit in the %d bytes left", n, r.left())
		return 0
	}
	return int(n)
}

func (r *reader) limits() Limits {
	var counts [5]int
	for i := range counts {
		v := r.varint("limits")
		if v < math.MinInt32 || v > math.MaxInt32 {
			// Far outside any valid value: refuse it here, so that the int conversion
			// below cannot lose bits on any platform and re-encoding stays exact.
			r.fail("limits", "count %d out of range", v)
		}
		counts[i] = int(v)
	}
	var durs [3]time.Duration
	for i := range durs {
		durs[i] = time.Duration(r.varint("limits"))
	}
	return Limits{
		MaxNameBytes:         counts[0],
		MaxMetadataBytes:     counts[1],
		MaxLocksPerSession:   counts[2],
		MaxSessionsPerClient: counts[3],
		MaxWaitersPerLock:    counts[4],
		MinTTL:               durs[0],
		MaxTTL:               durs[1],
		MaxLockDelay:         durs[2],
	}
}

// end fails unless every byte was consumed.
func (r *reader) end() {
	if r.err == nil && r.left() != 0 {
		r.fail("end", "%d trailing bytes", r.left())
	}
}
