package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/testcluster"
	"github.com/lockd/lockd/internal/wire"
)

// syncBuf is a log sink several nodes write to at once.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log lines with the given message.
func (s *syncBuf) lines(msg string) []map[string]any {
	s.mu.Lock()
	text := s.b.String()
	s.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(text, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (s *syncBuf) waitFor(t *testing.T, msg string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		for _, l := range s.lines(msg) {
			if ok(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line as wanted within %v; lines with that message: %v", msg, hangGuard, s.lines(msg))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSessionExpiryAndMasterChangeAreLogged checks the INFO lines of the
// node that decides: a session expired by a master, with its owner and the
// locks it released, and the master changes of a group whose master stops,
// with old and new master and why.
func TestSessionExpiryAndMasterChangeAreLogged(t *testing.T) {
	var logs syncBuf
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	tc := testcluster.Start(t, testcluster.Options{Groups: 2, Logger: logger})
	masters := tc.WaitForMasters(hangGuard)
	c := &cluster{Cluster: tc, groups: 2}
	for i := 0; i < c.N(); i++ {
		c.clients = append(c.clients, dial(t, c.Addr(i), c.ClientTLS()))
	}

	name := "jobs/nightly"
	g := wire.GroupOf(name, c.groups)
	a := c.do(t, wire.Msg{Type: wire.TypeOpenSession, Group: g, TTL: time.Second}).Session
	if r := c.do(t, wire.Msg{Type: wire.TypeAcquire, Group: g, Session: a, Name: name}); r.Code != wire.CodeOK {
		t.Fatalf("acquire: %+v", r)
	}
	exp := logs.waitFor(t, "session expired", func(l map[string]any) bool { return l["session"] == float64(a) })
	if exp["locks_released"] != float64(1) || !strings.Contains(strings.Join(strs(exp["locks"]), ","), name) || exp["owner"] == "" || exp["ttl"] == nil {
		t.Errorf("session expiry line lacks the owner, TTL or released lock: %v", exp)
	}
	t.Logf("expiry: %v", exp)

	// Stop the master of group g: the others log old -> none -> new.
	victim := masters[g]
	tc.StopNode(victim)
	ch := logs.waitFor(t, "group master changed", func(l map[string]any) bool {
		return l["group"] == float64(g) && l["old"] == float64(victim+1) && l["new"] != float64(0)
	})
	t.Logf("master change: %v", ch)
	if ch["why"] == "" || ch["epoch"] == nil {
		t.Errorf("master change line lacks why or epoch: %v", ch)
	}
	logs.waitFor(t, "peer left the mesh", func(l map[string]any) bool { return l["peer"] == float64(victim+1) })
}

func strs(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, e := range l {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}
