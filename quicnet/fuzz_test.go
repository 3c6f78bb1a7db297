package quicnet

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes to ReadFrame. It must never panic,
// never return a payload over the limit or larger than the input, never
// allocate (capacity) beyond the payload, and whatever it reads must
// re-encode to a frame that reads back the same.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, []byte("hello")))
	f.Add(AppendFrame(AppendFrame(nil, nil), []byte{1, 2, 3}))
	f.Add([]byte{FrameVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{2, 0})
	f.Add([]byte{FrameVersion, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		src := bytes.NewReader(data)
		r := bufio.NewReader(src)
		for frames := 0; frames <= len(data); frames++ { // each frame eats at least 2 bytes
			p, err := ReadFrame(r, limit)
			if err != nil {
				if err == io.EOF && src.Len()+r.Buffered() != 0 {
					t.Fatalf("clean EOF with %d bytes unread", src.Len()+r.Buffered())
				}
				if errors.Is(err, io.EOF) && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("wrapped io.EOF %v: callers test err == io.EOF", err)
				}
				return
			}
			if len(p) > limit || len(p) > len(data) || cap(p) != len(p) {
				t.Fatalf("payload of %d bytes (capacity %d) from %d input bytes", len(p), cap(p), len(data))
			}
			again, err := ReadFrame(bufio.NewReader(bytes.NewReader(AppendFrame(nil, p))), limit)
			if err != nil || !bytes.Equal(again, p) {
				t.Fatalf("re-encoded frame reads back %x, %v; want %x", again, err, p)
			}
		}
		t.Fatal("more frames than input bytes")
	})
}
