package election

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecodeLeaseCmd: the decoder never panics, accepts only valid commands,
// and what it accepts re-encodes to the same bytes (one encoding per command).
func FuzzDecodeLeaseCmd(f *testing.F) {
	f.Add(LeaseCmd{Holder: 1, Duration: 2 * time.Second, Nonce: 1}.Encode())
	f.Add(LeaseCmd{Holder: 3, Release: true, To: 1, Nonce: makeNonce(5, 6)}.Encode())
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(bytes.Repeat([]byte{0xff}, leaseCmdSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeLeaseCmd(b)
		if err != nil {
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("decoded an invalid command %v: %v", c, verr)
		}
		if again := c.Encode(); !bytes.Equal(again, b) {
			t.Fatalf("%x decodes to %v, which encodes to %x", b, c, again)
		}
	})
}
