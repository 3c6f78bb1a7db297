package server_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/lockd/lockd/internal/testcluster"
	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

// TestBrokenFramingGetsAnErrorFrame is issue 10's rule for malformed
// frames, at the framing level (below wire.Decode, which
// TestAuthzLimits covers end to end): a frame of an unknown version, or
// one announced larger than the frame limit, is answered with an error
// frame that says why, and then the stream closes.
func TestBrokenFramingGetsAnErrorFrame(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{Groups: 1})
	tc := c.ClientTLS().Clone()
	tc.NextProtos = []string{quicnet.ALPNClient}
	for _, tt := range []struct {
		name  string
		bytes []byte
		code  wire.Code
		want  string
	}{
		{"unknown version", []byte{quicnet.FrameVersion + 7, 3, 1, 2, 3}, wire.CodeBadRequest, "malformed request frame: unknown frame version"},
		{"over the limit", binary.AppendUvarint([]byte{quicnet.FrameVersion}, quicnet.DefaultMaxFrame+1), wire.CodeLimit, "request too large: frame of 4194305 bytes exceeds the 4194304-byte limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			qc, err := quic.DialAddr(ctx, c.Addr(0), tc, &quic.Config{MaxIdleTimeout: hangGuard})
			if err != nil {
				t.Fatal(err)
			}
			defer qc.CloseWithError(0, "")
			s, err := qc.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write(tt.bytes); err != nil {
				t.Fatal(err)
			}
			_ = s.SetReadDeadline(time.Now().Add(hangGuard))
			br := bufio.NewReader(s)
			b, err := quicnet.ReadFrame(br, quicnet.DefaultMaxFrame)
			if err != nil {
				t.Fatalf("no error frame: %v", err)
			}
			m, err := wire.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Code != tt.code || !strings.Contains(m.Err, tt.want) || !strings.Contains(m.Err, "the stream is closed") {
				t.Errorf("answered %v %q, want %v with %q", m.Code, m.Err, tt.code, tt.want)
			}
			if _, err := quicnet.ReadFrame(br, quicnet.DefaultMaxFrame); err == nil {
				t.Errorf("the stream stayed open after the error frame")
			}
		})
	}
}
