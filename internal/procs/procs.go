// Package procs sizes the Go scheduler for a lockd node.
//
// A node spends much of its time in fsync: pebble's WAL writer blocks in
// fdatasync for 200–350 µs per synced write on the disks measured (see
// docs/benchmarks.md). A goroutine blocked in a system call keeps its P
// (one of GOMAXPROCS scheduler slots) until the runtime's monitor takes it
// back, which happens only after the monitor's next wake-up, from 20 µs up
// to 10 ms later. With GOMAXPROCS equal to a small core count, two fsyncs in
// flight hold every P, and the goroutines that carry Paxos messages and
// client replies wait for the monitor although a core is free. More Ps than
// cores lets them run at once. Measured on 2 cores (lockctl bench --local,
// 16 clients, 4 groups): GOMAXPROCS 2 gives about 2,000 acquire+release
// pairs/s, 4 to 16 give 3,000–4,200.
package procs

import (
	"runtime"
	"strconv"
)

// MinProcs is the least GOMAXPROCS that Tune sets.
const MinProcs = 8

// Want returns the GOMAXPROCS a node should run with on a machine with
// cpus cores: twice the cores, and at least MinProcs.
func Want(cpus int) int {
	return max(2*cpus, MinProcs)
}

// Tune raises GOMAXPROCS to Want(runtime.NumCPU()) unless the operator set
// it: env is the value of the GOMAXPROCS environment variable, which wins
// when it is a valid number. It returns the value in force afterwards. It
// never lowers GOMAXPROCS. Call it once, from main.
func Tune(env string) int {
	if n, err := strconv.Atoi(env); err == nil && n > 0 {
		return runtime.GOMAXPROCS(0)
	}
	want := Want(runtime.NumCPU())
	if runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
	return runtime.GOMAXPROCS(0)
}
