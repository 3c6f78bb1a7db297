package quicnet

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	p := newTestPKI(t)
	good := func() Config {
		return Config{
			ID: 1, ListenAddr: "127.0.0.1:0", TLS: p.nodeTLS(1),
			Peers: map[NodeID]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002"}, Handler: func(NodeID, []byte) {},
		}
	}
	noClientAuth := p.nodeTLS(1)
	noClientAuth.ClientAuth = tls.RequestClientCert
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"ID", func(c *Config) { c.ID = 0 }},
		{"ListenAddr", func(c *Config) { c.ListenAddr = "nowhere" }},
		{"Peers[2]", func(c *Config) { c.Peers = map[NodeID]string{2: "127.0.0.1"} }},
		{"Peers[2]", func(c *Config) { c.Peers = map[NodeID]string{2: "127.0.0.1:0"} }},
		{"Peers: ID 0", func(c *Config) { c.Peers = map[NodeID]string{0: "127.0.0.1:1"} }},
		{"Handler", func(c *Config) { c.Handler = nil }},
		{"TLS: must be set", func(c *Config) { c.TLS = nil }},
		{"TLS: ClientAuth", func(c *Config) { c.TLS = noClientAuth }},
		{"TLS: certificate is for node 2", func(c *Config) { c.TLS = p.nodeTLS(2) }},
		{"Lanes", func(c *Config) { c.Lanes = 65 }},
		{"QueueLen", func(c *Config) { c.QueueLen = -1 }},
		{"MaxFrame", func(c *Config) { c.MaxFrame = 1 << 30 }},
		{"ReconnectMax", func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Second, time.Millisecond }},
		{"IdleTimeout", func(c *Config) { c.IdleTimeout = time.Millisecond }},
		{"DialTimeout", func(c *Config) { c.DialTimeout = -time.Second }},
	} {
		cfg := good()
		tc.edit(&cfg)
		_, err := cfg.validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v does not name the field", tc.field, err)
		}
	}
	v, err := good().validate()
	if err != nil {
		t.Fatalf("good config: %v", err)
	}
	if v.Lanes != DefaultLanes || v.QueueLen != DefaultQueueLen || v.MaxFrame != DefaultMaxFrame || v.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("defaults not applied: %+v", v.Config)
	}
}

func TestNoPeersNeedsNoHandler(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t, Config{ID: 1, ListenAddr: "127.0.0.1:0", TLS: newTestPKI(t).nodeTLS(1), Peers: map[NodeID]string{1: "127.0.0.1:9"}, Logger: testLogger(t)})
	if len(n.Stats()) != 0 {
		t.Errorf("a node listing only itself has peers: %+v", n.Stats())
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
