//go:build !unix

package main

import (
	"os"
	"os/exec"
)

func ownProcessGroup(*exec.Cmd, bool) {}

func isTerminal(*os.File) bool { return false }

// signalGroup signals CMD itself; without process groups, its children
// are not reached.
func signalGroup(cmd *exec.Cmd, sig os.Signal) {
	if cmd.Process == nil {
		return
	}
	if sig == os.Kill {
		cmd.Process.Kill()
		return
	}
	cmd.Process.Signal(sig)
}
