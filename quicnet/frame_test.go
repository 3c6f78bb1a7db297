package quicnet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func reader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func TestFramesRoundTripAndEndCleanly(t *testing.T) {
	payloads := [][]byte{{}, []byte("a"), bytes.Repeat([]byte{7}, 300), bytes.Repeat([]byte{9}, 200<<10)}
	var buf []byte
	for _, p := range payloads {
		buf = AppendFrame(buf, p)
	}
	r := reader(buf)
	for i, want := range payloads {
		got, err := ReadFrame(r, 1<<20)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %d bytes, %v; want %d bytes", i, len(got), err, len(want))
		}
		if cap(got) != len(got) {
			t.Errorf("frame %d: capacity %d for %d bytes", i, cap(got), len(got))
		}
	}
	if _, err := ReadFrame(r, 1<<20); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

func TestFrameOverLimitIsRefusedWithSizeAndLimit(t *testing.T) {
	buf := []byte{FrameVersion}
	buf = binary.AppendUvarint(buf, 9000000)
	_, err := ReadFrame(reader(buf), DefaultMaxFrame)
	if !errors.Is(err, ErrFrameTooLarge) || err.Error() != "frame of 9000000 bytes exceeds the 4194304-byte limit" {
		t.Errorf("got %v", err)
	}
	// Exactly at the limit is fine.
	if _, err := ReadFrame(reader(AppendFrame(nil, make([]byte, 10))), 10); err != nil {
		t.Errorf("frame at the limit: %v", err)
	}
}

func TestFrameOfUnknownVersionIsRefused(t *testing.T) {
	_, err := ReadFrame(reader([]byte{7, 1, 0}), 100)
	if !errors.Is(err, ErrFrameVersion) || err.Error() != "unknown frame version 7: peer runs a newer lockd?" {
		t.Errorf("version 7: %v", err)
	}
	_, err = ReadFrame(reader([]byte{0, 1, 0}), 100)
	if !errors.Is(err, ErrFrameVersion) || !strings.Contains(err.Error(), "not a lockd stream") {
		t.Errorf("version 0: %v", err)
	}
}

func TestTruncatedFrameIsUnexpectedEOF(t *testing.T) {
	full := AppendFrame(nil, []byte("hello"))
	for cut := 1; cut < len(full); cut++ {
		_, err := ReadFrame(reader(full[:cut]), 100)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("frame cut at %d of %d bytes: %v, want io.ErrUnexpectedEOF", cut, len(full), err)
		}
	}
	// A varint that never ends is refused, not read forever.
	bad := append([]byte{FrameVersion}, bytes.Repeat([]byte{0xff}, 11)...)
	if _, err := ReadFrame(reader(bad), 100); err == nil {
		t.Error("overlong varint accepted")
	}
}

func TestLyingFrameLengthAllocatesOnlyWhatArrives(t *testing.T) {
	// A header claiming 60 MiB followed by 10 bytes must not make
	// ReadFrame allocate 60 MiB.
	buf := []byte{FrameVersion}
	buf = binary.AppendUvarint(buf, 60<<20)
	buf = append(buf, make([]byte, 10)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := ReadFrame(reader(buf), 64<<20); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 10<<20 {
		t.Errorf("10 lying frames allocated %d bytes", grew)
	}
}
