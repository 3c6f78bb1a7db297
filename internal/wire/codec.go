package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// ErrMalformed wraps every decoding error.
var ErrMalformed = errors.New("wire: malformed message")

// Decoding bounds. A frame is bounded by the transport too; these bound what
// one Msg may make the decoder allocate.
const (
	MaxItems       = 1 << 16 // items of each kind in one Msg
	MaxStringBytes = 64 << 10
	// MaxChunkBytes bounds a snapshot chunk (TypeSnapshot).
	MaxChunkBytes = 1 << 20
)

// Field tags. The low bit of an encoded key says how the value is encoded:
// 0 a uvarint, 1 a length-prefixed byte string. Unknown tags are skipped.
const (
	tagType      = 1
	tagReqID     = 2
	tagGroup     = 3
	tagSession   = 4
	tagClient    = 5
	tagSeq       = 6
	tagAck       = 7
	tagName      = 8
	tagToken     = 9
	tagTTL       = 10
	tagLockDelay = 11
	tagFlags     = 12
	tagMetadata  = 13
	tagCode      = 14
	tagErr       = 15
	tagHint      = 16
	tagHintAddr  = 17
	tagEpoch     = 18
	tagSlot      = 19
	tagNode      = 20
	tagGroups    = 21
	tagKind      = 22
	tagWaiters   = 23
	tagOffset    = 24
	tagSize      = 25
	tagChunk     = 26
	tagHolderCnt = 27
	tagKeepAlive = 30
	tagMaster    = 31
	tagHolder    = 32
	tagMember    = 33
	// tagRules is far from the others so that fields added meanwhile on
	// other branches do not take it.
	tagRules = 40
	// tagChangeOp is a membership change's kind (TypeChangeMembers).
	tagChangeOp = 41
)

type enc struct{ b []byte }

func (e *enc) uint(tag int, v uint64) {
	if v == 0 {
		return
	}
	e.b = binary.AppendUvarint(e.b, uint64(tag)<<1)
	e.b = binary.AppendUvarint(e.b, v)
}

func (e *enc) bytes(tag int, v []byte) {
	if len(v) == 0 {
		return
	}
	e.b = binary.AppendUvarint(e.b, uint64(tag)<<1|1)
	e.b = binary.AppendUvarint(e.b, uint64(len(v)))
	e.b = append(e.b, v...)
}

func (e *enc) str(tag int, v string) {
	if v == "" {
		return
	}
	e.b = binary.AppendUvarint(e.b, uint64(tag)<<1|1)
	e.b = binary.AppendUvarint(e.b, uint64(len(v)))
	e.b = append(e.b, v...)
}

// nested appends an item encoded by f as a byte string.
func (e *enc) nested(tag int, f func(*enc)) {
	var inner enc
	f(&inner)
	e.b = binary.AppendUvarint(e.b, uint64(tag)<<1|1)
	e.b = binary.AppendUvarint(e.b, uint64(len(inner.b)))
	e.b = append(e.b, inner.b...)
}

func boolv(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Append appends the encoding of m to dst.
func Append(dst []byte, m *Msg) []byte {
	e := enc{b: append(dst, Version)}
	e.uint(tagType, uint64(m.Type))
	e.uint(tagReqID, m.ReqID)
	e.uint(tagGroup, uint64(m.Group))
	e.uint(tagSession, m.Session)
	e.uint(tagClient, m.Client)
	e.uint(tagSeq, m.Seq)
	e.uint(tagAck, m.Ack)
	e.str(tagName, m.Name)
	e.uint(tagToken, m.Token)
	e.uint(tagTTL, uint64(m.TTL))
	e.uint(tagLockDelay, uint64(m.LockDelay))
	e.uint(tagFlags, uint64(m.Flags))
	e.bytes(tagMetadata, m.Metadata)
	e.uint(tagCode, uint64(m.Code))
	e.str(tagErr, m.Err)
	e.uint(tagHint, uint64(m.Hint))
	e.str(tagHintAddr, m.HintAddr)
	e.uint(tagEpoch, m.Epoch)
	e.uint(tagSlot, m.Slot)
	e.uint(tagNode, uint64(m.Node))
	e.uint(tagGroups, uint64(m.Groups))
	e.uint(tagKind, uint64(m.Kind))
	e.uint(tagWaiters, uint64(m.Waiters))
	e.uint(tagOffset, m.Offset)
	e.uint(tagSize, m.Size)
	e.bytes(tagChunk, m.Chunk)
	e.uint(tagHolderCnt, uint64(m.HolderCount))
	e.str(tagRules, m.Rules)
	e.uint(tagChangeOp, uint64(m.ChangeOp))
	for _, it := range m.KeepAlives {
		e.nested(tagKeepAlive, func(n *enc) {
			n.uint(1, uint64(it.Group))
			n.uint(2, it.Session)
			n.uint(3, uint64(it.Code))
		})
	}
	for _, it := range m.Masters {
		e.nested(tagMaster, func(n *enc) {
			n.uint(1, uint64(it.Group))
			n.uint(2, it.Epoch)
			n.uint(3, uint64(it.Master))
			n.str(4, it.Addr)
			n.uint(5, it.Seq)
			n.uint(6, uint64(it.Cause))
		})
	}
	for _, it := range m.Holders {
		e.nested(tagHolder, func(n *enc) {
			n.uint(1, it.Session)
			n.uint(2, it.Token)
			n.uint(3, boolv(it.Shared))
			n.bytes(4, it.Metadata)
		})
	}
	for _, it := range m.Members {
		e.nested(tagMember, func(n *enc) {
			n.uint(1, uint64(it.ID))
			n.str(2, it.Addr)
			n.uint(3, boolv(it.Up))
			n.uint(4, boolv(it.Voter))
			n.uint(5, it.Progress)
		})
	}
	return e.b
}

type dec struct {
	b   []byte
	err error
}

// next reads one field: its tag, and either a uvarint or a byte string.
func (d *dec) next() (tag int, v uint64, s []byte, ok bool) {
	if d.err != nil || len(d.b) == 0 {
		return 0, 0, nil, false
	}
	key, n := binary.Uvarint(d.b)
	if n <= 0 || key>>1 > 1<<16 {
		d.err = fmt.Errorf("%w: bad field key", ErrMalformed)
		return 0, 0, nil, false
	}
	d.b = d.b[n:]
	tag = int(key >> 1)
	v, n = binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: field %d: bad varint", ErrMalformed, tag)
		return 0, 0, nil, false
	}
	d.b = d.b[n:]
	if key&1 == 0 {
		return tag, v, nil, true
	}
	if v > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: field %d claims %d bytes, only %d left", ErrMalformed, tag, v, len(d.b))
		return 0, 0, nil, false
	}
	s = d.b[:v]
	d.b = d.b[v:]
	return tag, 0, s, true
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *dec) u32(tag int, v uint64) uint32 {
	if v > 1<<32-1 {
		d.fail("field %d: %d does not fit 32 bits", tag, v)
	}
	return uint32(v)
}

func (d *dec) u8(tag int, v uint64) uint8 {
	if v > 1<<8-1 {
		d.fail("field %d: %d does not fit 8 bits", tag, v)
	}
	return uint8(v)
}

func (d *dec) dur(tag int, v uint64) time.Duration {
	if v > 1<<62 {
		d.fail("field %d: duration %d out of range", tag, v)
	}
	return time.Duration(v)
}

func (d *dec) str(tag int, s []byte) string {
	if len(s) > MaxStringBytes {
		d.fail("field %d is %d bytes, the limit is %d", tag, len(s), MaxStringBytes)
		return ""
	}
	return string(s)
}

func (d *dec) clone(s []byte) []byte {
	if len(s) == 0 {
		return nil
	}
	return append([]byte(nil), s...)
}

// Decode decodes one Msg. It never panics and never keeps a reference to b.
// A message with more than MaxItems items of a kind, a string over
// MaxStringBytes, or a number that does not fit its field is an error
// wrapping ErrMalformed.
func Decode(b []byte) (Msg, error) {
	var m Msg
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if b[0] != Version {
		return m, fmt.Errorf("%w: protocol version %d, this node speaks %d: upgrade the older side", ErrMalformed, b[0], Version)
	}
	d := dec{b: b[1:]}
	for {
		tag, v, s, ok := d.next()
		if !ok {
			break
		}
		switch tag {
		case tagType:
			m.Type = Type(d.u32(tag, v))
		case tagReqID:
			m.ReqID = v
		case tagGroup:
			m.Group = d.u32(tag, v)
		case tagSession:
			m.Session = v
		case tagClient:
			m.Client = v
		case tagSeq:
			m.Seq = v
		case tagAck:
			m.Ack = v
		case tagName:
			m.Name = d.str(tag, s)
		case tagToken:
			m.Token = v
		case tagTTL:
			m.TTL = d.dur(tag, v)
		case tagLockDelay:
			m.LockDelay = d.dur(tag, v)
		case tagFlags:
			m.Flags = Flags(d.u32(tag, v))
		case tagMetadata:
			if len(s) > MaxStringBytes {
				d.fail("metadata is %d bytes, the limit is %d", len(s), MaxStringBytes)
			}
			m.Metadata = d.clone(s)
		case tagCode:
			if v > 1<<16-1 {
				d.fail("code %d out of range", v)
			}
			m.Code = Code(v)
		case tagErr:
			m.Err = d.str(tag, s)
		case tagHint:
			m.Hint = d.u32(tag, v)
		case tagHintAddr:
			m.HintAddr = d.str(tag, s)
		case tagEpoch:
			m.Epoch = v
		case tagSlot:
			m.Slot = v
		case tagNode:
			m.Node = d.u32(tag, v)
		case tagGroups:
			m.Groups = d.u32(tag, v)
		case tagKind:
			if v > 255 {
				d.fail("event kind %d out of range", v)
			}
			m.Kind = EventKind(v)
		case tagWaiters:
			m.Waiters = d.u32(tag, v)
		case tagOffset:
			m.Offset = v
		case tagSize:
			m.Size = v
		case tagChunk:
			if len(s) > MaxChunkBytes {
				d.fail("snapshot chunk is %d bytes, the limit is %d", len(s), MaxChunkBytes)
			}
			m.Chunk = d.clone(s)
		case tagHolderCnt:
			m.HolderCount = d.u32(tag, v)
		case tagRules:
			m.Rules = d.str(tag, s)
		case tagChangeOp:
			m.ChangeOp = d.u8(tag, v)
		case tagKeepAlive, tagMaster, tagHolder, tagMember:
			d.item(&m, tag, s)
		}
		if d.err != nil {
			return Msg{}, d.err
		}
	}
	if d.err != nil {
		return Msg{}, d.err
	}
	if m.Type == 0 {
		return Msg{}, fmt.Errorf("%w: no message type", ErrMalformed)
	}
	return m, nil
}

func (d *dec) item(m *Msg, tag int, s []byte) {
	if len(m.KeepAlives)+len(m.Masters)+len(m.Holders)+len(m.Members) >= MaxItems {
		d.fail("more than %d items", MaxItems)
		return
	}
	in := dec{b: s}
	switch tag {
	case tagKeepAlive:
		var it KeepAliveItem
		for t, v, _, ok := in.next(); ok; t, v, _, ok = in.next() {
			switch t {
			case 1:
				it.Group = in.u32(t, v)
			case 2:
				it.Session = v
			case 3:
				it.Code = Code(in.u32(t, v))
			}
		}
		m.KeepAlives = append(m.KeepAlives, it)
	case tagMaster:
		var it MasterItem
		for t, v, b, ok := in.next(); ok; t, v, b, ok = in.next() {
			switch t {
			case 1:
				it.Group = in.u32(t, v)
			case 2:
				it.Epoch = v
			case 3:
				it.Master = in.u32(t, v)
			case 4:
				it.Addr = in.str(t, b)
			case 5:
				it.Seq = v
			case 6:
				it.Cause = in.u8(t, v)
			}
		}
		m.Masters = append(m.Masters, it)
	case tagHolder:
		var it HolderItem
		for t, v, b, ok := in.next(); ok; t, v, b, ok = in.next() {
			switch t {
			case 1:
				it.Session = v
			case 2:
				it.Token = v
			case 3:
				it.Shared = v != 0
			case 4:
				if len(b) > MaxStringBytes {
					in.fail("holder metadata is %d bytes, the limit is %d", len(b), MaxStringBytes)
				}
				it.Metadata = in.clone(b)
			}
		}
		m.Holders = append(m.Holders, it)
	case tagMember:
		var it MemberItem
		for t, v, b, ok := in.next(); ok; t, v, b, ok = in.next() {
			switch t {
			case 1:
				it.ID = in.u32(t, v)
			case 2:
				it.Addr = in.str(t, b)
			case 3:
				it.Up = v != 0
			case 4:
				it.Voter = v != 0
			case 5:
				it.Progress = v
			}
		}
		m.Members = append(m.Members, it)
	}
	if in.err != nil {
		d.err = in.err
	}
}
