package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"testing"
)

// TestRetryWhileFullWaitsForSpace: a write refused for a full disk (an
// error wrapping ENOSPC, as pebblestore.ErrDiskFull does) is tried again
// until it goes through, instead of stopping the node; other errors and a
// stop end the wait at once.
func TestRetryWhileFullWaitsForSpace(t *testing.T) {
	r := &Replica{cfg: Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	full := fmt.Errorf("store: disk full: %w", syscall.ENOSPC)
	tries := 0
	err := r.retryWhileFull(context.Background(), full, func() error {
		tries++
		if tries < 2 {
			return full
		}
		return nil
	})
	if err != nil || tries != 2 {
		t.Fatalf("retryWhileFull = %v after %d tries, want nil after 2", err, tries)
	}
	other := errors.New("io error")
	if err := r.retryWhileFull(context.Background(), other, func() error { t.Fatal("retried another error"); return nil }); err != other {
		t.Fatalf("another error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.retryWhileFull(ctx, full, func() error { return full }); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("stopped while full: %v", err)
	}
}
