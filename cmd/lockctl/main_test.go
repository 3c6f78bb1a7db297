package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
)

func TestExitCodes(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{usageErrorf("bad"), exitUsage},
		{&exitErr{code: 42}, 42},
		{fmt.Errorf("acquire: %w", client.ErrLockLost), exitLockLost},
		{fmt.Errorf("renew: %w", client.ErrSessionExpired), exitLockLost},
		{fmt.Errorf("try: %w", client.ErrLockHeld), exitTimeout},
		{fmt.Errorf("x: %w", client.ErrUnavailable), exitUnreachable},
		{fmt.Errorf("x: %w", client.ErrNoMaster), exitUnreachable},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), exitUnreachable},
		{&client.Error{Code: client.CodeLimit}, exitError},
		{errors.New("other"), exitError},
	}
	for _, tc := range cases {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	// The documented codes are the constants.
	for code, line := range map[int]string{exitOK: "0  success", exitError: "1  any other", exitUsage: "64  bad usage",
		exitUnreachable: "3  cannot reach", exitTimeout: "4  timed out", exitLockLost: "5  the lock was lost"} {
		if !strings.Contains(exitCodesHelp, line) {
			t.Errorf("exit code %d is not documented as %q", code, line)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	app := newApp(nil, nil)
	cases := []struct {
		in       string
		out, cmd string
		dashdash bool
	}{
		{"lockctl acquire job", "lockctl acquire -- job", "", false},
		{"lockctl --json acquire job --ttl 30s --shared", "lockctl --json acquire --ttl 30s --shared -- job", "", false},
		{"lockctl --endpoints a:1 acquire job --wait=false -- sh -c exit --ttl", "lockctl --endpoints a:1 acquire --wait=false -- job", "sh -c exit --ttl", true},
		{"lockctl elect lead --kill-grace 1s --", "lockctl elect --kill-grace 1s -- lead", "", true},
		{"lockctl renew job --session 4 --token 9", "lockctl renew --session 4 --token 9 -- job", "", false},
		{"lockctl status", "lockctl status", "", false},
		// lockctl's own flags after the command's arguments.
		{"lockctl acquire job --timeout 2s -- true", "lockctl --timeout 2s acquire -- job", "true", true},
		{"lockctl status job --json --config=c.json", "lockctl --json --config=c.json status -- job", "", false},
		{"lockctl elect lead --ttl 5s --timeout 1s --json -- sh -c x", "lockctl --timeout 1s --json elect --ttl 5s -- lead", "sh -c x", true},
		{"lockctl --help", "lockctl --help", "", false},
	}
	for _, tc := range cases {
		out, cmd, dd := splitArgs(app, strings.Fields(tc.in))
		if strings.Join(out, " ") != tc.out || strings.Join(cmd, " ") != tc.cmd || dd != tc.dashdash {
			t.Errorf("%s:\n got %q %q %v\nwant %q %q %v", tc.in, strings.Join(out, " "), strings.Join(cmd, " "), dd, tc.out, tc.cmd, tc.dashdash)
		}
	}
}

// configOf runs lockctl with args on a probe command and returns the client
// configuration the flags, the environment and the config file give.
func configOf(t *testing.T, args ...string) (client.Config, error) {
	t.Helper()
	var cfg client.Config
	var cerr error
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	app.Commands = append(app.Commands, &cli.Command{Name: "probe", Action: func(c *cli.Context) error {
		cfg, cerr = clientConfig(c)
		return nil
	}})
	if err := app.Run(append(append([]string{"lockctl"}, args...), "probe")); err != nil {
		t.Fatal(err)
	}
	return cfg, cerr
}

func TestClientConfigFromFlagsEnvAndFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "lockctl.json")
	if err := client.WriteConfigFile(file, client.Config{Endpoints: []string{"f:1"}, CAFile: "ca.crt", CertFile: "c.crt", KeyFile: "c.key"}); err != nil {
		t.Fatal(err)
	}

	cfg, err := configOf(t, "--endpoints", "a:1,b:2", "--endpoints", "c:3", "--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem")
	if err != nil || !reflect.DeepEqual(cfg.Endpoints, []string{"a:1", "b:2", "c:3"}) || cfg.CAFile != "ca.pem" || cfg.CertFile != "c.pem" || cfg.KeyFile != "k.pem" {
		t.Fatalf("flags: %+v, %v", cfg, err)
	}

	t.Setenv("LOCKD_ENDPOINTS", "e:1,e:2")
	t.Setenv("LOCKD_CA", "env-ca.pem")
	cfg, err = configOf(t)
	if err != nil || !reflect.DeepEqual(cfg.Endpoints, []string{"e:1", "e:2"}) || cfg.CAFile != "env-ca.pem" {
		t.Fatalf("environment: %+v, %v", cfg, err)
	}
	os.Unsetenv("LOCKD_ENDPOINTS")
	os.Unsetenv("LOCKD_CA")

	t.Setenv("LOCKD_CONFIG", file)
	cfg, err = configOf(t)
	if err != nil || !reflect.DeepEqual(cfg.Endpoints, []string{"f:1"}) || cfg.CAFile != filepath.Join(dir, "ca.crt") {
		t.Fatalf("config file: %+v, %v", cfg, err)
	}
	cfg, err = configOf(t, "--endpoints", "x:9", "--key", "other.key")
	if err != nil || !reflect.DeepEqual(cfg.Endpoints, []string{"x:9"}) || cfg.KeyFile != "other.key" || cfg.CertFile != filepath.Join(dir, "c.crt") {
		t.Fatalf("flags over the config file: %+v, %v", cfg, err)
	}
	os.Unsetenv("LOCKD_CONFIG")

	if _, err := configOf(t); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "LOCKD_CONFIG") {
		t.Fatalf("no cluster given: %v", err)
	}
	if _, err := configOf(t, "--config", filepath.Join(dir, "nope.json")); exitCode(err) != exitUsage {
		t.Fatalf("missing config file: %v", err)
	}
}

func lockctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"lockctl"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"acquire"},
		{"acquire", "a", "b"},
		{"--endpoints", "a:1", "--ca", "x", "acquire", "job", "--"},
		{"elect", "lead"},
		{"validate", "job", "notanumber"},
		{"renew", "job"},
		{"acquire", "--no-such-flag", "job"},
		{"--endpoints", "a:1", "--ca", "x", "acquire", "job", "--ttl", "2s", "--kill-grace", "2s", "--", "true"},
	} {
		code, _, stderr := lockctl(t, args...)
		if code != exitUsage {
			t.Errorf("lockctl %s: exit %d (%s), want %d", strings.Join(args, " "), code, stderr, exitUsage)
		}
	}
}

func TestUnreachableClusterExits3(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "lockctl.json")
	// A real CA file, so that only the network fails.
	startCfg := startCluster(t)
	ca := filepath.Join(filepath.Dir(startCfg), "ca.crt")
	if err := client.WriteConfigFile(file, client.Config{Endpoints: []string{"127.0.0.1:1"}, CAFile: ca}); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := lockctl(t, "--config", file, "--timeout", "500ms", "members")
	if code != exitUnreachable {
		t.Fatalf("exit %d (%s), want %d", code, stderr, exitUnreachable)
	}
}

// A panic outside the main goroutine (the client library's, or a signal
// handler's) is not recovered by runApp: the Go runtime prints it and exits
// with 2. That code must not be the one that says "bad usage", or a crash
// would read as the user's mistake.
func TestGoroutinePanicDoesNotExitAsBadUsage(t *testing.T) {
	if os.Getenv("LOCKCTL_TEST_GOROUTINE_PANIC") == "1" {
		never := make(chan struct{})
		go func() { panic("planted by TestGoroutinePanicDoesNotExitAsBadUsage") }()
		<-never
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGoroutinePanicDoesNotExitAsBadUsage$")
	cmd.Env = append(os.Environ(), "LOCKCTL_TEST_GOROUTINE_PANIC=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the panicking child: %v, want an exit code\n%s", err, out)
	}
	if code := ee.ExitCode(); code == exitUsage || !strings.Contains(string(out), "planted") {
		t.Fatalf("a goroutine panic exited with %d, the bad-usage code\n%s", code, out)
	}
	if !strings.Contains(exitCodesHelp, fmt.Sprintf("%d  lockctl crashed", ee.ExitCode())) {
		t.Errorf("exit code %d of a crash is not documented as one", ee.ExitCode())
	}
}
