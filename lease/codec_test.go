package lease

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleCommands has one command of every op, with every field the op reads set.
func sampleCommands() []Command {
	return []Command{
		{Op: OpOpenSession, Now: t0, Client: 1 << 40, TTL: 12 * time.Second},
		{Op: OpCloseSession, Now: t0 + 1, Session: 7},
		{Op: OpExpireSession, Now: -5, Session: 1<<64 - 1},
		{Op: OpAcquire, Now: t0, Session: 3, Name: "db/primary", Shared: true, Wait: true, Metadata: []byte("host=a"), LockDelay: 15 * time.Second},
		{Op: OpAcquire, Now: t0, Session: 3, Name: "x"},
		{Op: OpRelease, Now: t0, Session: 3, Name: "db/primary", Token: 1234567},
		{Op: OpCancelWait, Now: t0, Session: 3, Name: "db/primary"},
		{Op: OpTick, Now: t0 + int64(time.Hour)},
		{Op: OpSetLimits, Now: t0, Limits: DefaultLimits()},
		{Op: OpRaiseTokenFloor, Now: t0, Token: 1 << 50},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		b := c.Encode()
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%v: %v", c.Op, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%v: decoded %+v, want %+v", c.Op, got, c)
		}
		if !bytes.Equal(got.AppendTo([]byte("prefix")), append([]byte("prefix"), b...)) {
			t.Fatalf("%v: AppendTo does not append the encoding", c.Op)
		}
	}
}

func TestEncodeWritesOnlyTheFieldsTheOpReads(t *testing.T) {
	c := Command{Op: OpTick, Now: 5, Session: 9, Name: "ignored", Metadata: []byte("ignored"), Token: 3}
	got, err := DecodeCommand(c.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Command{Op: OpTick, Now: 5}); !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	if n := len(c.Encode()); n != 3 {
		t.Fatalf("a tick is %d bytes, want 3", n)
	}
}

func TestDecodeCommandRejectsBadInput(t *testing.T) {
	acquire := Command{Op: OpAcquire, Session: 1, Name: "x", Metadata: []byte("m")}.Encode()
	withByte := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	longName := Command{Op: OpAcquire, Session: 1, Name: strings.Repeat("n", NameBytesCeiling+1)}.Encode()
	for _, tc := range []struct {
		name string
		in   []byte
		want error
		text string
	}{
		{"empty", nil, ErrMalformed, "version at byte 0: truncated"},
		{"newer version", []byte{3, 7, 0}, ErrVersion, "command version 3, this build reads 1 and 2: upgrade"},
		{"unknown op", []byte{1, 99, 0}, ErrMalformed, "unknown op 99"},
		{"op zero", []byte{1, 0, 0}, ErrMalformed, "unknown op 0"},
		{"trailing byte", append(Command{Op: OpTick}.Encode(), 0), ErrMalformed, "1 trailing bytes"},
		{"non-minimal varint", []byte{1, byte(OpTick), 0x80, 0x00}, ErrMalformed, "varint is not minimal"},
		{"varint overflow", []byte{1, byte(OpTick), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, ErrMalformed, "overflows"},
		{"unknown flag", withByte(acquire, 6, 4), ErrMalformed, "unknown flags 0x4"},
		{"name over the ceiling", longName, ErrMalformed, "length 4097 exceeds the ceiling 4096"},
		{"length beyond input", []byte{1, byte(OpRelease), 0, 1, 0x90, 0x01, 1}, ErrMalformed, "length 144 but only 1 bytes left"},
		{"limits count out of range", append([]byte{1, byte(OpSetLimits), 0}, 0xff, 0xff, 0xff, 0xff, 0x7f), ErrMalformed, "out of range"},
	} {
		_, err := DecodeCommand(tc.in)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: err %v, want %v saying %q", tc.name, err, tc.want, tc.text)
		}
	}
	// Every strict prefix of every command is truncated, never a shorter command.
	for _, c := range sampleCommands() {
		b := c.Encode()
		for n := range len(b) {
			if _, err := DecodeCommand(b[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v cut to %d of %d bytes: err %v", c.Op, n, len(b), err)
			}
		}
	}
}

func TestDecodeCommandDoesNotAliasItsInput(t *testing.T) {
	in := Command{Op: OpAcquire, Session: 1, Name: "abc", Metadata: []byte("meta")}.Encode()
	c, err := DecodeCommand(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 0
	}
	if c.Name != "abc" || string(c.Metadata) != "meta" {
		t.Fatalf("decoded command changed with its input: %+v", c)
	}
}
