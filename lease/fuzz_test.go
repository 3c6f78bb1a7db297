package lease

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzDecodeCommand checks that DecodeCommand never panics, that whatever it accepts
// re-encodes to the very same bytes (the encoding is canonical), and that Apply takes
// any decoded command without panicking or breaking an invariant.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		f.Add(c.Encode())
	}
	f.Add([]byte{})
	f.Add([]byte{1, byte(OpAcquire), 0x80, 0x00})
	f.Add([]byte{2, 1, 0})
	base := richTable(f).t.Snapshot()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrVersion", err)
			}
			return
		}
		if enc := c.Encode(); !bytes.Equal(enc, data) {
			t.Fatalf("decoded %+v re-encodes to %x, input %x", c, enc, data)
		}
		tb := New(DefaultLimits())
		if err := tb.Restore(base); err != nil {
			t.Fatal(err)
		}
		pos, _ := tb.Applied()
		pos.Slot++
		tb.Apply(pos, c)
		if err := checkInvariants(tb); err != nil {
			t.Fatalf("after %+v: %v", c, err)
		}
	})
}

// FuzzRestore checks that Restore never panics, that a snapshot it accepts describes a
// table that keeps every invariant and snapshots back to the same bytes, and that such
// a table goes on working. Each input is tried as is and with its checksum recomputed,
// so that mutated bodies get past the checksum and reach the decoder proper.
func FuzzRestore(f *testing.F) {
	f.Add(New(DefaultLimits()).Snapshot())
	f.Add(richTable(f).t.Snapshot())
	h := richTable(f)
	h.advance(10 * time.Second)
	h.apply(Command{Op: OpTick})
	f.Add(h.t.Snapshot())
	f.Add([]byte("LKDT\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		inputs := [][]byte{data}
		if len(data) >= snapshotOverhead {
			inputs = append(inputs, reseal(data))
		}
		for _, in := range inputs {
			tb := New(DefaultLimits())
			if err := tb.Restore(in); err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
					t.Fatalf("error %v wraps neither ErrMalformed nor ErrVersion", err)
				}
				continue
			}
			if err := checkInvariants(tb); err != nil {
				t.Fatalf("Restore accepted a broken table: %v", err)
			}
			if out := tb.Snapshot(); !bytes.Equal(out, in) {
				t.Fatalf("restored snapshot re-encodes differently:\n in %x\nout %x", in, out)
			}
			// The restored table must go on: end every lock-delay, then every session.
			pos, _ := tb.Applied()
			pos.Slot++
			now := tb.Now() + int64(LockDelayCeiling) + 1
			tb.Apply(pos, Command{Op: OpTick, Now: now})
			for _, s := range tb.Sessions() {
				pos.Slot++
				tb.Apply(pos, Command{Op: OpExpireSession, Session: s.ID, Now: now})
			}
			if err := checkInvariants(tb); err != nil {
				t.Fatalf("after expiring every session: %v", err)
			}
			if st := tb.Stats(); st.Holders != 0 || st.Waiters != 0 || st.Sessions != 0 {
				t.Fatalf("state left after every session ended: %+v", st)
			}
		}
	})
}
