//go:build unix

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// ownProcessGroup starts CMD in a process group of its own, so that a
// signal reaches its children too (sh -c, scripts).
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// signalGroup sends sig to CMD's process group.
func signalGroup(cmd *exec.Cmd, sig os.Signal) {
	if cmd.Process == nil {
		return
	}
	if s, ok := sig.(syscall.Signal); ok {
		if syscall.Kill(-cmd.Process.Pid, s) == nil {
			return
		}
	}
	cmd.Process.Signal(sig)
}
