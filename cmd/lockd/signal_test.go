package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunAsProcess is not a test: TestEarlySIGTERMStopsCleanly runs the
// test binary again with LOCKD_TEST_AS_PROCESS=1, and then this function
// is lockd's main, with the arguments after "--".
func TestRunAsProcess(t *testing.T) {
	if os.Getenv("LOCKD_TEST_AS_PROCESS") != "1" {
		t.Skip("a helper: runs lockd's main in a child process")
	}
	for i, a := range os.Args {
		if a == "--" {
			os.Exit(run(append([]string{"lockd"}, os.Args[i+1:]...), os.Stdout, os.Stderr))
		}
	}
	os.Exit(exitUsage)
}

// A SIGTERM that comes while `lockd run` opens its data dir must stop the
// node cleanly (exit 0, its data dir whole), not kill it mid-open with the
// runtime's default action, which is what happened when the signal handler
// was installed only after the node was up. The admin port is opened just
// before the data dir, so the signal is sent the moment it accepts; with
// the handler installed late, the child dies by the signal.
func TestEarlySIGTERMStopsCleanly(t *testing.T) {
	certs := makeCerts(t)
	data := filepath.Join(t.TempDir(), "data")
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer := pc.LocalAddr().String()
	pc.Close()
	for round := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		admin := ln.Addr().String()
		ln.Close()
		cmd := exec.Command(os.Args[0], "-test.run=^TestRunAsProcess$", "--",
			"run", "--id", "1", "--peers", "1="+peer, "--data-dir", data, "--certs", certs, "--admin", admin)
		cmd.Env = append(os.Environ(), "LOCKD_TEST_AS_PROCESS=1")
		out, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Poll the admin port; a hang guard, not a bound.
		up := false
		for i := 0; i < 60_000 && !up; i++ {
			if c, err := net.Dial("tcp", admin); err == nil {
				c.Close()
				up = true
				break
			}
			select {
			case err := <-exited:
				b, _ := os.ReadFile(out.Name())
				t.Fatalf("round %d: lockd exited before its admin port opened: %v\n%s", round, err, b)
			case <-time.After(time.Millisecond):
			}
		}
		if !up {
			t.Fatalf("round %d: the admin port never opened", round)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var werr error
		select {
		case werr = <-exited:
		case <-time.After(2 * time.Minute): // a hang guard
			cmd.Process.Kill()
			t.Fatalf("round %d: lockd did not stop within 2 minutes of SIGTERM", round)
		}
		b, _ := os.ReadFile(out.Name())
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("round %d: a SIGTERM while lockd opened killed it (%v) instead of stopping it cleanly\n%s", round, ws.Signal(), b)
			}
			t.Fatalf("round %d: exit %d after an early SIGTERM, want 0\n%s", round, ee.ExitCode(), b)
		} else if werr != nil {
			t.Fatal(werr)
		}
		t.Logf("round %d: stopped cleanly", round)
	}
}

// A --join node waits, before it builds its groups, until a member tells it
// the cluster's founding configuration; a SIGTERM meanwhile stops it
// cleanly (exit 0), and its data dir still says it waits, so that a restart
// waits again.
func TestJoinWaitingStopsOnSIGTERM(t *testing.T) {
	certs := makeCerts(t)
	if code, out, errOut := lockd(t, "certs", "node", "4", "--dir", certs); code != 0 {
		t.Fatalf("certs node 4: exit %d\n%s%s", code, out, errOut)
	}
	var addrs []string
	for range 2 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, pc.LocalAddr().String())
		pc.Close()
	}
	data := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunAsProcess$", "--",
		"run", "--id", "4", "--join", "--peers", "1="+addrs[0]+",4="+addrs[1], "--data-dir", data, "--certs", certs)
	cmd.Env = append(os.Environ(), "LOCKD_TEST_AS_PROCESS=1")
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(2 * time.Minute) // a hang guard, not a bound
	for waiting := false; !waiting; {
		b, _ := os.ReadFile(out.Name())
		waiting = strings.Contains(string(b), "waiting to be added")
		select {
		case err := <-exited:
			t.Fatalf("lockd --join exited before it said it waits: %v\n%s", err, b)
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("lockd --join never said it waits to be added:\n%s", b)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var werr error
	select {
	case werr = <-exited:
	case <-deadline:
		cmd.Process.Kill()
		t.Fatal("lockd --join did not stop after SIGTERM")
	}
	b, _ := os.ReadFile(out.Name())
	if werr != nil {
		t.Fatalf("lockd --join waiting to be added: %v after SIGTERM, want exit 0\n%s", werr, b)
	}
	mustContain(t, "the log", string(b), "stopped before it started")
	mf, err := os.ReadFile(filepath.Join(data, "lockd-members.json"))
	if err != nil || !strings.Contains(string(mf), `"pending": true`) {
		t.Fatalf("the member file after a stop while waiting: %v\n%s", err, mf)
	}
}
