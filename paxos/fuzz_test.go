package paxos

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"
)

// fuzzLimits are small, so that the fuzzer reaches the limit checks.
var fuzzLimits = Limits{MaxMessageBytes: 1 << 16, MaxEntries: 16, MaxCommands: 64, MaxCommandBytes: 4096}

// FuzzDecodeMessage: no input makes DecodeMessage panic or fail without
// ErrCorrupt, and every input it accepts is the one canonical encoding of
// what it decoded to.
func FuzzDecodeMessage(f *testing.F) {
	for _, tc := range codecMessages() {
		f.Add(AppendMessage(nil, &tc.m))
	}
	rng := rand.New(rand.NewSource(1))
	for range 20 {
		m := randomMessage(rng)
		f.Add(AppendMessage(nil, &m))
	}
	f.Add(AppendMessage(nil, &Message{Type: MsgAccept, Entries: []Entry{{Value: Value{Cmds: make([]Command, 65)}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		m, err := DecodeMessage(b, fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if !bytes.Equal(b, in) {
			t.Fatalf("DecodeMessage changed its input")
		}
		out := AppendMessage(nil, &m)
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, out)
		}
		// The decoded message does not alias the input.
		for i := range b {
			b[i] ^= 0xff
		}
		if again := AppendMessage(nil, &m); !bytes.Equal(again, out) {
			t.Fatalf("decoded message changed with its input buffer")
		}
	})
}

// FuzzDecodeEntryRecord: the same for log records, which come from disk.
func FuzzDecodeEntryRecord(f *testing.F) {
	for _, tc := range codecMessages() {
		for _, e := range tc.m.Entries {
			f.Add(e.Slot, AppendEntryRecord(nil, &e))
		}
	}
	rng := rand.New(rand.NewSource(2))
	for range 20 {
		m := randomMessage(rng)
		for _, e := range m.Entries {
			f.Add(e.Slot, AppendEntryRecord(nil, &e))
		}
	}
	f.Add(uint64(0), AppendHardState(nil, &HardState{Commit: 5}))
	f.Fuzz(func(t *testing.T, slot uint64, b []byte) {
		e, err := DecodeEntryRecord(slot, b, fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if e.Slot != slot || e.Chosen {
			t.Fatalf("decoded slot %d chosen=%v, want slot %d not chosen", e.Slot, e.Chosen, slot)
		}
		out := AppendEntryRecord(nil, &e)
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, out)
		}
		for i := range b {
			b[i] ^= 0xff
		}
		if again := AppendEntryRecord(nil, &e); !bytes.Equal(again, out) {
			t.Fatalf("decoded entry changed with its input buffer")
		}
	})
}

// FuzzDecodeHardState: the same for hard states.
func FuzzDecodeHardState(f *testing.F) {
	f.Add(AppendHardState(nil, &HardState{}))
	f.Add(AppendHardState(nil, &HardState{Promised: Ballot{Round: 1 << 50, Node: 3}, Commit: 1 << 33}))
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := DecodeHardState(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if out := AppendHardState(nil, &hs); !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n  in %x\n out %x", b, out)
		}
	})
}
