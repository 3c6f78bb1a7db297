package main

import "syscall"

// setParentDeathSignal has the kernel SIGKILL CMD when lockctl dies. The
// signal is tied to the OS thread that started CMD (runHeld keeps it locked
// until CMD exits), and it reaches CMD only, not CMD's own children.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
