package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLimiterOncePerIntervalPerKey: a key logs once per interval, the
// next line says how many were held back, and keys do not hold each other
// back.
func TestLimiterOncePerIntervalPerKey(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Unix(1000, 0)
	l := New(10 * time.Second)
	l.now = func() time.Time { return now }
	for i := 0; i < 100; i++ {
		l.Warn(log, "a", "bad frame", "from", "x")
	}
	l.Warn(log, "b", "other key")
	if got := strings.Count(buf.String(), "bad frame"); got != 1 {
		t.Fatalf("%d lines for key a within the interval, want 1:\n%s", got, buf.String())
	}
	if !strings.Contains(buf.String(), "other key") {
		t.Fatalf("key b was held back by key a:\n%s", buf.String())
	}
	now = now.Add(10 * time.Second)
	l.Warn(log, "a", "bad frame", "from", "x")
	if got := strings.Count(buf.String(), "bad frame"); got != 2 || !strings.Contains(buf.String(), "suppressed=99") {
		t.Fatalf("after the interval: %d lines, want 2, the second with suppressed=99:\n%s", got, buf.String())
	}
}

// TestLimiterBoundedKeys: many distinct keys do not grow memory without
// bound.
func TestLimiterBoundedKeys(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := New(time.Hour)
	for i := 0; i < 3*maxKeys; i++ {
		l.Warn(log, strings.Repeat("k", i%50)+string(rune(i)), "x")
	}
	if n := len(l.seen); n > maxKeys {
		t.Fatalf("%d keys remembered, want at most %d", n, maxKeys)
	}
}
