package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Every streamed --json line starts with "kind" and "time" (RFC 3339), the
// same two fields for lock events, watch events and master events.
func TestJSONEventLinesShareOneSchema(t *testing.T) {
	var buf bytes.Buffer
	p := printer{w: &buf, json: true}
	p.event("acquired", lockJSON{Name: "a", Token: 3, Session: 9})
	p.event("master", struct {
		Group uint32 `json:"group"`
		Kind  string `json:"kind"` // a field of the same name is replaced
	}{Group: 2, Kind: "x"})
	p.event("granted", map[string]any{"name": "b", "waiters": 1})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"acquired", "master", "granted"} {
		if !strings.HasPrefix(lines[i], `{"kind":"`+want+`","time":"`) {
			t.Fatalf("line %d does not start with kind and time: %s", i, lines[i])
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Fatalf("line %d: time: %v", i, err)
		}
	}
}
