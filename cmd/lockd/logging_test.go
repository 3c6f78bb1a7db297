package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestLogFormatsPrintTheSameValues checks that --log-format json prints
// addresses as host:port and durations as text, as the text format does
// (issue 13: JSON printed {"IP":...,"Port":...} and nanoseconds).
func TestLogFormatsPrintTheSameValues(t *testing.T) {
	udp := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7400}
	tcp := &net.TCPAddr{IP: net.ParseIP("::1"), Port: 9400}
	ap := netip.MustParseAddrPort("10.0.0.2:7400")
	var nilAddr *net.UDPAddr
	record := func(format string) string {
		var buf bytes.Buffer
		logger, err := newLogger("info", format, &buf)
		if err != nil {
			t.Fatal(err)
		}
		logger.Info("peer connected", "remote", udp, "admin", tcp, "addrport", ap, "lease", 2*time.Second,
			"took", 1500*time.Millisecond, "none", nilAddr, "err", errors.New("boom"), "group", 3)
		return buf.String()
	}
	text, js := record("text"), record("json")
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("JSON log line does not parse: %v\n%s", err, js)
	}
	want := map[string]string{"remote": "127.0.0.1:7400", "admin": "[::1]:9400", "addrport": "10.0.0.2:7400", "lease": "2s", "took": "1.5s", "none": "", "err": "boom"}
	for k, v := range want {
		if got, ok := m[k].(string); !ok || got != v {
			t.Errorf("JSON %s = %#v, want %q\n%s", k, m[k], v, js)
		}
		if v == "" {
			continue
		}
		if !strings.Contains(text, k+"="+v) && !strings.Contains(text, k+"=\""+v+"\"") {
			t.Errorf("text lacks %s=%s:\n%s", k, v, text)
		}
	}
	if g, ok := m["group"].(float64); !ok || g != 3 {
		t.Errorf("JSON group = %#v, want the number 3", m["group"])
	}
}
