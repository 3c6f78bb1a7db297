package main

import (
	"log/slog"
	"os"
	"strconv"
)

// testClockRateEnv names the environment variable that makes a node's
// lease, election and session-expiry clock run fast or slow (1.5: half
// again as fast). It is read by tests only (internal/nemesis, clock
// faults) and is not a flag on purpose: a production node must never run
// with it, and it is not documented in --help.
const testClockRateEnv = "LOCKD_TEST_ONLY_CLOCK_RATE"

// testClockRate returns the rate from testClockRateEnv (0: unset), and
// warns loudly when it is set.
func testClockRate(logger *slog.Logger) (float64, error) {
	v := os.Getenv(testClockRateEnv)
	if v == "" {
		return 0, nil
	}
	rate, err := strconv.ParseFloat(v, 64)
	if err != nil || rate < 0.1 || rate > 10 {
		return 0, usageErrorf("%s=%q: want a number from 0.1 to 10, or unset it (it is for tests only)", testClockRateEnv, v)
	}
	logger.Warn("TEST ONLY: this node's lease and session clock runs at a false rate; never run a real cluster like this", "env", testClockRateEnv, "rate", rate)
	return rate, nil
}
