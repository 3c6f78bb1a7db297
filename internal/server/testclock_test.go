package server

import (
	"testing"
	"time"
)

func TestTestClockRunsAtItsRate(t *testing.T) {
	for _, rate := range []float64{0.5, 2} {
		clk := testClock(rate)
		r0 := time.Now()
		a := clk()
		time.Sleep(20 * time.Millisecond)
		b := clk()
		r1 := time.Now()
		got := b.Sub(a)
		// Between a and b at least 20ms of real time passed, and at most
		// r1-r0: the clock moved rate times that, whatever the load.
		if lo, hi := time.Duration(rate*float64(20*time.Millisecond)), time.Duration(rate*float64(r1.Sub(r0))); got < lo || got > hi {
			t.Errorf("rate %v: the clock moved %v, want between %v and %v", rate, got, lo, hi)
		}
	}
	if err := validTestClockRate(0); err != nil {
		t.Errorf("rate 0 (off) refused: %v", err)
	}
	if err := validTestClockRate(-1); err == nil {
		t.Error("rate -1 accepted")
	}
}
