package lease_test

import (
	"fmt"
	"time"

	"github.com/lockd/lockd/lease"
)

// Example walks through one lock's life: a grant, a waiter, the holder's session
// expiring with a lock-delay, and the waiter's grant once the delay is over. In lockd the
// group master proposes each command with its clock as Now, and every replica applies
// it at the position Paxos chose.
func Example() {
	t := lease.New(lease.DefaultLimits())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	slot := uint64(0)
	apply := func(c lease.Command) lease.Result {
		slot++
		c.Now = now
		return t.Apply(lease.Position{Slot: slot}, c)
	}

	alice := apply(lease.Command{Op: lease.OpOpenSession, Client: 1, TTL: 10 * time.Second}).Session
	bob := apply(lease.Command{Op: lease.OpOpenSession, Client: 2, TTL: 10 * time.Second}).Session

	r := apply(lease.Command{Op: lease.OpAcquire, Session: alice, Name: "db/primary", LockDelay: 5 * time.Second})
	fmt.Println("alice:", r.Code, "token", r.Token)

	r = apply(lease.Command{Op: lease.OpAcquire, Session: bob, Name: "db/primary"})
	fmt.Println("bob tries:", r.Err())
	r = apply(lease.Command{Op: lease.OpAcquire, Session: bob, Name: "db/primary", Wait: true})
	fmt.Println("bob waits:", r.Code)

	// The master stops hearing from alice and expires her session.
	r = apply(lease.Command{Op: lease.OpExpireSession, Session: alice})
	fmt.Println("expiry:", r.Events[0].Kind, "token", r.Events[0].Token)
	fmt.Println("still valid:", t.Validate("db/primary", 1))

	deadline, _ := t.NextDeadline()
	fmt.Println("lock-delay left:", time.Duration(deadline-now))
	now = deadline
	r = apply(lease.Command{Op: lease.OpTick})
	e := r.Events[0]
	fmt.Println("tick:", e.Kind, "to session", e.Session, "token", e.Token)

	// Output:
	// alice: ok token 1
	// bob tries: lease: acquire "db/primary" by session 2: held exclusive by session 1 (token 1): retry later, or wait
	// bob waits: queued
	// expiry: expired token 1
	// still valid: false
	// lock-delay left: 5s
	// tick: granted to session 2 token 2
}
