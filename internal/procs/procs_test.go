package procs

import (
	"runtime"
	"testing"
)

func TestWant(t *testing.T) {
	for _, c := range []struct{ cpus, want int }{{1, MinProcs}, {2, MinProcs}, {4, 8}, {16, 32}} {
		if got := Want(c.cpus); got != c.want {
			t.Errorf("Want(%d) = %d, want %d", c.cpus, got, c.want)
		}
	}
}

func TestTuneRaisesUnlessTheOperatorChose(t *testing.T) {
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	if got := Tune("1"); got != 1 {
		t.Fatalf("Tune with GOMAXPROCS=1 set changed it to %d; the operator's value must win", got)
	}
	if got, want := Tune(""), Want(runtime.NumCPU()); got != want {
		t.Fatalf("Tune() = %d, want %d", got, want)
	}
	runtime.GOMAXPROCS(1000)
	if got := Tune("not a number"); got != 1000 {
		t.Fatalf("Tune lowered GOMAXPROCS from 1000 to %d", got)
	}
}
