package replica

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// diskFullRetry is how often a write refused for a full disk is tried again.
const diskFullRetry = time.Second

// retryWhileFull tries save again while it fails because the disk is full
// (an error that wraps syscall.ENOSPC; pebblestore refuses before pebble
// writes anything, so nothing was half written). Meanwhile nothing that
// vouches for this write leaves the node: it does not vote, its master
// leases are not renewed and lapse, and the other nodes go on without it.
// It serves again as soon as the write goes through. It logs once when it
// starts waiting and then at most once a minute.
func (r *Replica) retryWhileFull(ctx context.Context, err error, save func() error) error {
	if !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	start := time.Now()
	var logged time.Time
	for errors.Is(err, syscall.ENOSPC) {
		if time.Since(logged) >= time.Minute {
			logged = time.Now()
			r.cfg.Logger.Error("disk full: this node writes nothing, does not vote and lets its master leases lapse until space returns; its state on disk is intact",
				"waiting", time.Since(start).Round(time.Second).String(), "err", err)
		}
		t := time.NewTimer(diskFullRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		err = save()
	}
	if err == nil {
		r.cfg.Logger.Warn("disk space is back: writing again", "after", time.Since(start).Round(time.Second).String())
	}
	return err
}
