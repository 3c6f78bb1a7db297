package client

import (
	"context"
	"math/rand/v2"
	"time"
)

// clock is the time source of the keep-alive loop and of the Lost deadline.
// Tests inject a fake one (Client.clk) to drive the deadline by hand. Times
// from the real clock carry Go's monotonic reading, so deadlines computed
// from them do not move when the wall clock is set.
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) timer
}

// timer is the part of *time.Timer the client uses.
type timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

// Retry pacing of requests: full jitter over an exponential backoff.
const (
	backoffBase = 20 * time.Millisecond
	backoffMax  = time.Second
	// maxAttempts bounds the attempts of one request. With the backoff above
	// they span about 6 s, more than a master election takes (a 2 s lease
	// plus a few round trips).
	maxAttempts = 12
)

// backoff returns the pause before retry n (1, 2, ...): a random duration
// in [d/2, d] with d = backoffBase·2^(n-1), capped at backoffMax. The
// jitter keeps clients that failed together from retrying together.
func backoff(n int) time.Duration {
	d := backoffBase << min(n-1, 10)
	if d > backoffMax || d <= 0 {
		d = backoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends, and returns ctx's error in that case.
func sleep(ctx context.Context, d time.Duration) error { return sleepFor(ctx, nil, d) }

// sleepFor waits d, or until ctx ends or the session s ends (s may be nil),
// and returns ctx's or the session's error in those cases.
func sleepFor(ctx context.Context, s *Session, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ended():
		return s.Err()
	}
}
