package client

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/internal/server"
)

// TestLightIdentityMakesNodesYield: an identity alone on the cluster, with
// many commands in flight, never makes a node hold its writes back; a
// light identity's sequential commands among another identity's do
// (server.proposeKind, replica.Config.YieldGap), and the nodes count it
// (lockd_store_yields_total). One group, so both identities share a
// master. The gap is 50 ms rather than 3: a node yields only if its next
// plain write comes within the gap after its last sync, which a starved
// CPU could make rare at 3 ms.
func TestLightIdentityMakesNodesYield(t *testing.T) {
	tc := startClusterTuned(t, 3, 1, false, func(c *server.Config) { c.YieldGap = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	heavy := tc.clientAs("heavy")
	hs, err := heavy.NewSession(ctx, SessionOptions{TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// loops runs 8 acquire+release loops of the heavy identity, n pairs
	// each, or until stop is closed.
	loops := func(n int, stop <-chan struct{}) *sync.WaitGroup {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < n; j++ {
					select {
					case <-stop:
						return
					default:
					}
					l, err := hs.Acquire(ctx, fmt.Sprintf("heavy-%d", i), LockOptions{})
					if err != nil {
						t.Errorf("heavy acquire: %v", err)
						return
					}
					if err := l.Release(ctx); err != nil {
						t.Errorf("heavy release: %v", err)
						return
					}
				}
			}()
		}
		return &wg
	}
	loops(25, nil).Wait()
	if t.Failed() {
		return
	}
	if y := tc.lc.Sums().Yields; y != 0 {
		t.Fatalf("the nodes yielded %v times to an identity alone on the cluster, want never", y)
	}

	light := tc.clientAs("light")
	stop := make(chan struct{})
	wg := loops(1<<30, stop)
	defer func() { close(stop); wg.Wait() }()
	ls, err := light.NewSession(ctx, SessionOptions{TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The heavy loops have commands in flight almost always; the light
	// client tries until one of its commands met them (bounded).
	for i := 0; tc.lc.Sums().Yields == 0; i++ {
		if i == 500 || ctx.Err() != nil {
			t.Fatalf("after %d acquire+release pairs of a light identity among a heavy one's, no node yielded", i)
		}
		l, err := ls.Acquire(ctx, "light", LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
