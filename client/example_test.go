package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/lockd/lockd/client"
)

// devConfig returns the path of the client config file that `lockd dev`
// writes. Here it comes from a throw-away cluster that the examples start.
var devConfig = client.DevConfigForExamples

func connect(ctx context.Context) *client.Client {
	cfg, err := client.LoadConfigFile(devConfig())
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// Acquire a lock, work while it is held, release it.
func Example() {
	ctx := context.Background()
	cfg, err := client.LoadConfigFile(devConfig())
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	s, err := c.NewSession(ctx, client.SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	l, err := s.Acquire(ctx, "jobs/nightly-report", client.LockOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// Hand l.Token() to what the lock protects, so that it can refuse a
	// writer with an older token.
	fmt.Println("holding", l.Name(), "with a token:", l.Token() > 0)
	if err := l.Release(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("released")
	// Output:
	// holding jobs/nightly-report with a token: true
	// released
}

// Stop working as soon as the lock is lost.
func ExampleLock_Lost() {
	ctx := context.Background()
	c := connect(ctx)
	defer c.Close()
	s, err := c.NewSession(ctx, client.SessionOptions{})
	if err != nil {
		log.Fatal(err)
	}
	l, err := s.Acquire(ctx, "leader", client.LockOptions{})
	if err != nil {
		log.Fatal(err)
	}
	work, stop := context.WithCancel(ctx)
	go func() {
		<-l.Lost() // the session ended, keep-alives failed, or released
		stop()
	}()
	s.Close(ctx) // here, the session ends on purpose
	<-work.Done()
	fmt.Println("stopped working:", context.Cause(work))
	// Output:
	// stopped working: context canceled
}

// TryAcquire does not wait for a held lock.
func ExampleSession_TryAcquire() {
	ctx := context.Background()
	c := connect(ctx)
	defer c.Close()
	a, _ := c.NewSession(ctx, client.SessionOptions{})
	b, _ := c.NewSession(ctx, client.SessionOptions{})
	defer a.Close(ctx)
	defer b.Close(ctx)

	if _, err := a.Acquire(ctx, "printer", client.LockOptions{}); err != nil {
		log.Fatal(err)
	}
	_, err := b.TryAcquire(ctx, "printer", client.LockOptions{})
	fmt.Println("held by another session:", errors.Is(err, client.ErrLockHeld))
	// Output:
	// held by another session: true
}

// A resource that cannot keep the newest token it has seen asks the
// cluster whether a token is still the holder's.
func ExampleClient_Validate() {
	ctx := context.Background()
	c := connect(ctx)
	defer c.Close()
	s, _ := c.NewSession(ctx, client.SessionOptions{})
	defer s.Close(ctx)
	l, err := s.Acquire(ctx, "db/primary", client.LockOptions{})
	if err != nil {
		log.Fatal(err)
	}
	ok, _ := c.Validate(ctx, "db/primary", l.Token())
	fmt.Println("valid while held:", ok)
	l.Release(ctx)
	ok, _ = c.Validate(ctx, "db/primary", l.Token())
	fmt.Println("valid after release:", ok)
	// Output:
	// valid while held: true
	// valid after release: false
}

// Watch a lock's holders change.
func ExampleClient_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := connect(ctx)
	defer c.Close()
	events, err := c.Watch(ctx, "queue/worker")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println((<-events).Kind) // the state first
	s, _ := c.NewSession(ctx, client.SessionOptions{})
	defer s.Close(ctx)
	l, _ := s.Acquire(ctx, "queue/worker", client.LockOptions{})
	l.Release(ctx)
	fmt.Println((<-events).Kind)
	fmt.Println((<-events).Kind)
	// Output:
	// sync
	// granted
	// released
}

// Follow the masters of the cluster's groups.
func ExampleClient_WatchMasters() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := connect(ctx)
	defer c.Close()
	st, err := c.ClusterStatus(ctx)
	if err != nil {
		log.Fatal(err)
	}
	masters, err := c.WatchMasters(ctx)
	if err != nil {
		log.Fatal(err)
	}
	seen := map[uint32]bool{}
	for len(seen) < st.Groups { // first, every group's current master
		ev := <-masters
		seen[ev.Group] = true
	}
	fmt.Println("groups:", len(seen))
	// Output:
	// groups: 4
}

// Leave a lock held after the process exits, and release it from another
// process later (what `lockctl acquire` without a command and `lockctl
// release` do).
func ExampleClient_ResumeLock() {
	ctx := context.Background()
	opts := client.SessionOptions{TTL: time.Minute}

	first := connect(ctx)
	s, _ := first.NewSession(ctx, opts)
	l, err := s.Acquire(ctx, "deploy", client.LockOptions{})
	if err != nil {
		log.Fatal(err)
	}
	session, token := l.SessionID(), l.Token()
	first.Close() // the session lives on for its TTL

	later := connect(ctx)
	defer later.Close()
	l, err = later.ResumeLock(ctx, "deploy", session, token, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("resumed the same grant:", l.Token() == token)
	if err := l.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// resumed the same grant: true
}
