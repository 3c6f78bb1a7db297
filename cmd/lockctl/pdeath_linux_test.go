package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// processGone reports whether pid has exited: no such process, or a zombie
// that nobody has reaped yet.
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) STATE ...
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// If lockctl is SIGKILLed while CMD runs, CMD dies too (its parent-death
// signal), instead of running on without the lock.
func TestCommandDiesWithKilledLockctl(t *testing.T) {
	cfg := startCluster(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startLockctl(t, nil, "--config", cfg, "acquire", "pdeath", "--", "sh", "-c", `echo $$ > `+pidFile+`.tmp; mv `+pidFile+`.tmp `+pidFile+`; exec sleep 300`)
	var pid int
	waitFor(t, "CMD starts", func() bool {
		b, err := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if processGone(pid) {
		t.Fatalf("CMD (pid %d) is not running", pid)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t)
	waitFor(t, "CMD dies with lockctl", func() bool { return processGone(pid) })
}
