package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

func TestSeqTrackerAckIsLowestOpen(t *testing.T) {
	tr := newSeqTracker()
	a, b, c := tr.begin(), tr.begin(), tr.begin()
	if a != 1 || b != 2 || c != 3 || tr.ack() != 1 {
		t.Fatalf("seqs %d %d %d ack %d", a, b, c, tr.ack())
	}
	tr.done(b)
	if tr.ack() != 1 {
		t.Fatalf("ack %d with seq 1 open", tr.ack())
	}
	tr.done(a)
	if tr.ack() != 3 {
		t.Fatalf("ack %d, want 3 (the only open seq)", tr.ack())
	}
	tr.done(c)
	if tr.ack() != 4 || tr.begin() != 4 {
		t.Fatal("with nothing open, ack is the next seq")
	}
}

func TestBackoffIsJitteredAndBounded(t *testing.T) {
	for n := 1; n < 40; n++ {
		d := backoff(n)
		hi := min(backoffBase<<min(n-1, 10), backoffMax)
		if d < hi/2 || d > hi {
			t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, hi/2, hi)
		}
	}
}

func TestRouterLearnsForgetsAndAvoidsDownNodes(t *testing.T) {
	r := newRouter([]string{"a:1"})
	r.setGroups(2)
	r.learnStatus(&wire.Msg{
		Members: []wire.MemberItem{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "c:1"}},
		Masters: []wire.MasterItem{{Group: 0, Epoch: 8, Master: 2, Addr: "b:1"}, {Group: 1, Epoch: 4, Master: 0}},
	})
	if got := r.pick(0, ""); got != "b:1" {
		t.Fatalf("pick(0) = %q, want the master b:1", got)
	}
	if got := r.master(1); got != "" {
		t.Fatalf("group 1 has no master, got %q", got)
	}
	// An older epoch does not overwrite a newer one.
	r.learnMaster(wire.MasterItem{Group: 0, Epoch: 4, Master: 3, Addr: "c:1"})
	if got := r.master(0); got != "b:1" {
		t.Fatalf("an older master event won: %q", got)
	}
	ch := r.changes(0)
	r.learnHint(0, 3, "")
	if got := r.master(0); got != "c:1" {
		t.Fatalf("hint to node 3 gave %q", got)
	}
	if !isClosed(ch) {
		t.Fatal("a master change did not close the group's change channel")
	}
	r.markDown("c:1")
	if got := r.master(0); got != "" {
		t.Fatalf("a down master is still returned: %q", got)
	}
	for i := 0; i < 6; i++ {
		if got := r.pick(0, "a:1"); got != "b:1" {
			t.Fatalf("pick avoiding a:1 with c:1 down = %q", got)
		}
	}
	r.markDown("a:1")
	r.markDown("b:1")
	if got := r.pick(-1, ""); got != "c:1" {
		t.Fatalf("all down: pick = %q, want the one down longest (c:1)", got)
	}
	r.markUp("b:1")
	if got := r.pick(-1, ""); got != "b:1" {
		t.Fatalf("pick = %q, want the node back up", got)
	}
}

func TestErrorsMatchSentinels(t *testing.T) {
	cases := []struct {
		code wire.Code
		lost error
		want error
	}{
		{wire.CodeWouldBlock, nil, ErrLockHeld},
		{wire.CodeSessionUnknown, nil, ErrSessionExpired},
		{wire.CodeBadToken, ErrLockLost, ErrLockLost},
		{wire.CodeNotFound, ErrLockLost, ErrLockLost},
		{wire.CodeNotMaster, nil, ErrNoMaster},
		{wire.CodeOverloaded, nil, ErrUnavailable},
		{wire.CodeOutcomeUnknown, nil, ErrUnavailable},
		{wire.CodeUnavailable, nil, ErrUnavailable},
	}
	for _, tc := range cases {
		err := errorFor(&wire.Msg{Code: tc.code, Err: "why", Node: 3}, tc.lost)
		if !errors.Is(err, tc.want) {
			t.Errorf("code %v: %v does not match %v", tc.code, err, tc.want)
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != Code(tc.code) || e.Node != 3 || !strings.Contains(err.Error(), "why") {
			t.Errorf("code %v: %#v", tc.code, err)
		}
	}
	if err := errorFor(&wire.Msg{Code: wire.CodeLimit}, nil); errors.Is(err, ErrLockHeld) || errors.Is(err, ErrUnavailable) {
		t.Errorf("a limit error matches a sentinel: %v", err)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	cases := map[string]Config{
		"Endpoints":      {},
		"Endpoints[1]":   {Endpoints: []string{"a:1", "nohost"}, CAFile: "ca"},
		"CAFile":         {Endpoints: []string{"a:1"}},
		"KeyFile":        {Endpoints: []string{"a:1"}, CAFile: "ca", CertFile: "c"},
		"DialTimeout":    {Endpoints: []string{"a:1"}, CAFile: "ca", DialTimeout: -1},
		"RequestTimeout": {Endpoints: []string{"a:1"}, CAFile: "ca", RequestTimeout: -1},
	}
	for field, c := range cases {
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
	if err := (Config{Endpoints: []string{"a:1"}, CAFile: "ca"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFileRoundTripAndRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "client.json")
	in := Config{Endpoints: []string{"127.0.0.1:7401", "127.0.0.1:7402"}, CAFile: "ca.crt", CertFile: "/abs/client.crt", KeyFile: "client.key"}
	if err := WriteConfigFile(path, in); err != nil {
		t.Fatal(err)
	}
	out, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Endpoints) != 2 || out.CAFile != filepath.Join(dir, "ca.crt") || out.CertFile != "/abs/client.crt" || out.KeyFile != filepath.Join(dir, "client.key") {
		t.Fatalf("loaded %+v", out)
	}
	bad := map[string]string{
		`{"endpoints": ["a:1"], "ca": "x", "keys": "y"}`: "unknown field",
		`{"endpoints": [], "ca": "x"}`:                   "Endpoints",
		`{"endpoints": ["a:1"]}`:                         "CAFile",
		`{"endpoints": ["a:1"], "ca": "x"} {}`:           "more than one",
		`not json`:                                       "client.json",
	}
	for text, want := range bad {
		os.WriteFile(path, []byte(text), 0o644)
		if _, err := LoadConfigFile(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %q", text, err, want)
		}
	}
	if _, err := LoadConfigFile(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
}

func TestNewFailsWithUnavailableWhenNoEndpointAnswers(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	cfg := Config{Endpoints: []string{"127.0.0.1:1"}, Logger: testLogger(), DialTimeout: 300 * time.Millisecond}
	certPEM, keyPEM, _ := fc.ca.IssueClient("x")
	var err error
	cfg.TLS, err = clientTLS(fc.ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctxT(t), cfg); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("New: %v, want ErrUnavailable naming the endpoint", err)
	}
}

func TestExportedNumbersAreTheProtocols(t *testing.T) {
	codes := map[Code]wire.Code{
		CodeWouldBlock: wire.CodeWouldBlock, CodeNotFound: wire.CodeNotFound, CodeBadToken: wire.CodeBadToken,
		CodeSessionUnknown: wire.CodeSessionUnknown, CodeLimit: wire.CodeLimit, CodeInvalid: wire.CodeInvalid,
		CodeModeConflict: wire.CodeModeConflict, CodeNotMaster: wire.CodeNotMaster, CodeOverloaded: wire.CodeOverloaded,
		CodeOutcomeUnknown: wire.CodeOutcomeUnknown, CodeBadRequest: wire.CodeBadRequest, CodeUnavailable: wire.CodeUnavailable,
		CodeInternal: wire.CodeInternal,
	}
	for c, w := range codes {
		if uint16(c) != uint16(w) {
			t.Errorf("Code %v is %d, the protocol's is %d", c, c, w)
		}
	}
	kinds := map[EventKind]wire.EventKind{EventGranted: wire.EventGranted, EventReleased: wire.EventReleased,
		EventExpired: wire.EventExpired, EventCanceled: wire.EventCanceled}
	for k, w := range kinds {
		if uint8(k) != uint8(w) {
			t.Errorf("EventKind %v is %d, the protocol's is %d", k, k, w)
		}
	}
}

// A group with no master for longer than 12 attempts (an election on a busy
// machine): a call whose context has a deadline keeps asking until the
// deadline, and succeeds once a master answers; without a deadline it gives
// up after maxAttempts, naming the last answer.
func TestNoMasterAnswersAreRetriedUntilTheDeadline(t *testing.T) {
	fc := newFakeCluster(t, 1, 1)
	n := fc.nodes[0]
	var statuses atomic.Int32
	const refusals = maxAttempts + 2
	n.setHandler(func(fs *fakeStream, m *wire.Msg) *wire.Msg {
		if m.Type != wire.TypeLockStatus {
			return nil
		}
		if statuses.Add(1) <= refusals {
			return &wire.Msg{Code: wire.CodeNotMaster, Err: "group 0 has no master right now (an election is under way)"}
		}
		return &wire.Msg{Code: wire.CodeOK}
	})
	c := fc.client()
	if _, err := c.LockStatus(ctxT(t), "x"); err != nil {
		t.Fatalf("LockStatus with a deadline, after %d no-master answers: %v", refusals, err)
	}
	if got := statuses.Load(); got != refusals+1 {
		t.Fatalf("%d requests, want %d", got, refusals+1)
	}
	statuses.Store(0)
	_, err := c.LockStatus(context.Background(), "x")
	if !errors.Is(err, ErrNoMaster) || !strings.Contains(err.Error(), fmt.Sprintf("gave up after %d attempts", maxAttempts)) {
		t.Fatalf("LockStatus without a deadline: %v, want ErrNoMaster after %d attempts", err, maxAttempts)
	}
}
