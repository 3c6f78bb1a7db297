//go:build unix

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// ownProcessGroup starts CMD in a process group of its own, so that a
// signal reaches its children too (sh -c, scripts); with shareTerminal,
// CMD stays in lockctl's group, the terminal's foreground group, so that it
// can read the terminal. Where the system has one (Linux), CMD gets a
// parent-death signal: if lockctl dies, even by SIGKILL, CMD is killed.
func ownProcessGroup(cmd *exec.Cmd, shareTerminal bool) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !shareTerminal}
	setParentDeathSignal(cmd.SysProcAttr)
}

// isTerminal reports whether f looks like a terminal (a character device).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// signalGroup sends sig to CMD's process group, or to CMD when it has no
// group of its own.
func signalGroup(cmd *exec.Cmd, sig os.Signal) {
	if cmd.Process == nil {
		return
	}
	if s, ok := sig.(syscall.Signal); ok && cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid {
		if syscall.Kill(-cmd.Process.Pid, s) == nil {
			return
		}
	}
	cmd.Process.Signal(sig)
}
