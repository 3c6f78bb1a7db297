package client

import (
	"context"
	"testing"
	"time"
)

func TestIntegrationAcquireRelease(t *testing.T) {
	tc := startCluster(t, 3, 4)
	c := tc.client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := c.NewSession(ctx, SessionOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := 0; i < 5; i++ {
		start := time.Now()
		l, err := s.Acquire(ctx, "a", LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("acquire %d: token %d in %v", i, l.Token(), time.Since(start))
		if l.Token() <= last {
			t.Fatalf("token %d after %d", l.Token(), last)
		}
		last = l.Token()
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
