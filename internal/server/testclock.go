package server

import (
	"fmt"
	"math"
	"time"
)

// testClock returns the clock this node reads for master leases, the
// election, session expiry and lock deadlines: time.Now, or, when
// Config.TestClockRate is set, a monotonic clock that runs rate times as
// fast from now on. The rate is for fault-injection tests only
// (internal/nemesis, "clock" faults): a node whose oscillator is off.
func testClock(rate float64) func() time.Time {
	if rate == 0 || rate == 1 {
		return time.Now
	}
	start := time.Now()
	return func() time.Time {
		return start.Add(time.Duration(float64(time.Since(start)) * rate))
	}
}

// validTestClockRate checks Config.TestClockRate.
func validTestClockRate(rate float64) error {
	if rate != 0 && (math.IsNaN(rate) || rate < 0.1 || rate > 10) {
		return fmt.Errorf("server config: TestClockRate %v: want 0 (off) or 0.1 to 10; it is for tests only", rate)
	}
	return nil
}

// now reads the node's clock (see testClock); a Server a test builds by
// hand reads time.Now.
func (s *Server) now() time.Time {
	if s.clock == nil {
		return time.Now()
	}
	return s.clock()
}
