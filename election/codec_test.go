package election

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/paxos"
)

func TestLeaseCmdRoundTrip(t *testing.T) {
	for _, c := range []LeaseCmd{
		{Holder: 1, Duration: 2 * time.Second, Nonce: 1},
		{Holder: 1<<32 - 1, Duration: MaxLeaseDuration, Nonce: 1<<64 - 1},
		{Holder: 3, Release: true, To: 1, Nonce: makeNonce(7, 9)},
		{Holder: 3, Release: true, Nonce: 5},
	} {
		b := c.Encode()
		if len(b) != leaseCmdSize {
			t.Fatalf("%v encodes to %d bytes, want %d", c, len(b), leaseCmdSize)
		}
		got, err := DecodeLeaseCmd(b)
		if err != nil || got != c {
			t.Fatalf("round trip of %v: got %v, %v", c, got, err)
		}
	}
}

func TestDecodeLeaseCmdRejects(t *testing.T) {
	good := LeaseCmd{Holder: 2, Duration: time.Second, Nonce: 9}.Encode()
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"bytes":        good[:len(good)-1],
		"version":      mod(func(b []byte) []byte { b[0] = 2; return b }),
		"flags":        mod(func(b []byte) []byte { b[1] = 0x80; return b }),
		"holder":       mod(func(b []byte) []byte { copy(b[2:6], []byte{0, 0, 0, 0}); return b }),
		"nonce":        mod(func(b []byte) []byte { copy(b[14:22], make([]byte, 8)); return b }),
		"lasts":        LeaseCmd{Holder: 2, Duration: -time.Second, Nonce: 9}.Encode(),
		"successor":    LeaseCmd{Holder: 2, Duration: time.Second, Nonce: 9, To: 1}.Encode(),
		"carries a du": LeaseCmd{Holder: 2, Duration: time.Second, Nonce: 9, Release: true}.Encode(),
		"at most":      LeaseCmd{Holder: 2, Duration: MaxLeaseDuration + 1, Nonce: 9}.Encode(),
	}
	for word, b := range cases {
		if _, err := DecodeLeaseCmd(b); err == nil || !strings.Contains(err.Error(), word) {
			t.Errorf("decoding %x: err %v, want one that mentions %q", b, err, word)
		}
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	base := func() Config { return Config{Self: 1, Nodes: []paxos.NodeID{1, 2, 3}} }
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"Self", func(c *Config) { c.Self = 0 }},
		{"Nodes", func(c *Config) { c.Nodes = nil }},
		{"Nodes", func(c *Config) { c.Nodes = append(c.Nodes, 2) }},
		{"Groups", func(c *Config) { c.Groups = 5000 }},
		{"Lease", func(c *Config) { c.Lease = -1 }},
		{"Drift", func(c *Config) { c.Drift = time.Second }},
		{"RenewEvery", func(c *Config) { c.RenewEvery = time.Second }},
		{"CampaignDelay", func(c *Config) { c.CampaignDelay = 3 * time.Second }},
		{"Tick", func(c *Config) { c.Tick = 400 * time.Millisecond }},
		{"HandoverBackoff", func(c *Config) { c.HandoverBackoff = -1 }},
		{"History", func(c *Config) { c.History = -1 }},
		{"SubscriberQueue", func(c *Config) { c.SubscriberQueue = -1 }},
	}
	for _, tc := range cases {
		c := base()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("config with bad %s: err %v, want one naming the field", tc.field, err)
		}
		if _, err := New(c); err == nil {
			t.Errorf("New accepted a config with bad %s", tc.field)
		}
	}
	c := base()
	if err := c.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	e, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	got := e.Config()
	if got.Lease != 2*time.Second || got.Drift != 100*time.Millisecond || got.RenewEvery != 500*time.Millisecond ||
		got.CampaignDelay != 150*time.Millisecond || got.Tick != 50*time.Millisecond || got.Groups != 16 {
		t.Fatalf("defaults: %+v", got)
	}
}
