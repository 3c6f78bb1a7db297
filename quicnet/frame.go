package quicnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameVersion is the first byte of every frame this lockd writes. A reader
// refuses any other value, so that an older node meets a newer protocol with
// a clear error instead of misreading it.
const FrameVersion byte = 1

// DefaultMaxFrame is the largest frame payload accepted unless configured
// otherwise: large enough for a batch of Paxos accepts or a snapshot chunk,
// small enough that a corrupt length cannot exhaust memory.
const DefaultMaxFrame = 4 << 20

// maxFrameLimit bounds every configured frame limit.
const maxFrameLimit = 64 << 20

// readChunk is the most ReadFrame allocates ahead of the bytes that have
// actually arrived: a frame header can claim up to the frame limit, but the
// buffer only grows (doubling) as payload bytes are read.
const readChunk = 64 << 10

// ErrFrameTooLarge matches (errors.Is) the error for a frame whose payload
// exceeds the limit, on reading and on writing.
var ErrFrameTooLarge = errors.New("frame too large")

// ErrFrameVersion matches (errors.Is) the error for a frame that starts with
// a version byte other than FrameVersion.
var ErrFrameVersion = errors.New("unknown frame version")

// frameSizeError reports a payload size over the limit.
type frameSizeError struct {
	size  uint64
	limit int
}

func (e *frameSizeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the %d-byte limit", e.size, e.limit)
}

func (e *frameSizeError) Is(target error) bool { return target == ErrFrameTooLarge }

// frameVersionError reports an unexpected version byte.
type frameVersionError struct{ version byte }

func (e *frameVersionError) Error() string {
	if e.version > FrameVersion {
		return fmt.Sprintf("unknown frame version %d: peer runs a newer lockd?", e.version)
	}
	return fmt.Sprintf("unknown frame version %d: not a lockd stream or a corrupt frame", e.version)
}

func (e *frameVersionError) Is(target error) bool { return target == ErrFrameVersion }

// AppendFrame appends one frame holding payload to dst and returns the
// extended slice. A frame is the version byte, the payload length as an
// unsigned varint, and the payload. AppendFrame does not check any limit;
// writers check the limit of the receiving side before sending.
func AppendFrame(dst, payload []byte) []byte {
	dst = append(dst, FrameVersion)
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	return append(dst, payload...)
}

// writeFrame writes one frame to w without copying payload.
func writeFrame(w *bufio.Writer, payload []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = FrameVersion
	n := binary.PutUvarint(hdr[1:], uint64(len(payload)))
	if _, err := w.Write(hdr[:1+n]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// ReadFrame reads one frame from r and returns its payload in a new slice the
// caller owns. It returns io.EOF, and only then, when r ends cleanly before a
// frame starts; a frame cut short is io.ErrUnexpectedEOF. A payload larger
// than max is refused before it is read (ErrFrameTooLarge), and memory is
// allocated only as payload bytes arrive, so a lying length costs nothing.
// ReadFrame never panics on any input.
func ReadFrame(r *bufio.Reader, max int) ([]byte, error) {
	v, err := r.ReadByte()
	if err != nil {
		return nil, err // io.EOF here is a clean end between frames
	}
	if v != FrameVersion {
		return nil, &frameVersionError{version: v}
	}
	size, err := binary.ReadUvarint(r)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read frame length: %w", err)
	}
	if max < 0 || size > uint64(max) {
		return nil, &frameSizeError{size: size, limit: max}
	}
	n := int(size) // fits: size <= max, an int
	buf := make([]byte, 0, min(n, readChunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), n))
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read frame payload: got %d of %d bytes: %w", len(buf), n, err)
		}
	}
	return buf, nil
}
