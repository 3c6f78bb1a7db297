//go:build unix

package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/lockd/lockd/client"
)

// The test binary doubles as a small lock-holding program, so that a Go
// client can live in its own process and be SIGKILLed like a real one.
// TestMain runs helperMain instead of the tests when helperRoleEnv is set.
const (
	helperRoleEnv = "LOCKD_E2E_HELPER" // "acquire" or "flood" (floodMain)
	helperConfig  = "LOCKD_E2E_CONFIG" // client config file
	helperName    = "LOCKD_E2E_NAME"   // lock name
	helperTTL     = "LOCKD_E2E_TTL"    // session TTL
	helperHold    = "LOCKD_E2E_HOLD"   // "1": hold until killed; else release and exit
)

// helperMain runs the helper role and returns the exit code.
func helperMain(role string) int {
	switch role {
	case "acquire":
		return acquireMain()
	case "flood":
		return floodMain()
	}
	fmt.Fprintf(os.Stderr, "unknown helper role %q\n", role)
	return 2
}

// acquireMain acquires a lock (waiting while it is held), prints
// "granted token=N", then holds it until killed or releases it and exits.
func acquireMain() int {
	ttl, err := time.ParseDuration(os.Getenv(helperTTL))
	if err != nil {
		ttl = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg, err := client.LoadConfigFile(os.Getenv(helperConfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The client's debug log (retries, reconnects) goes to stderr, which
	// the test keeps with the other logs.
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cl, err := client.New(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cl.Close()
	sess, err := cl.NewSession(ctx, client.SessionOptions{TTL: ttl})
	if err != nil {
		fmt.Fprintln(os.Stderr, "new session:", err)
		return 1
	}
	lock, err := sess.Acquire(ctx, os.Getenv(helperName), client.LockOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "acquire:", err)
		return 1
	}
	fmt.Printf("granted token=%d\n", lock.Token())
	if os.Getenv(helperHold) == "1" {
		select {
		case <-lock.Lost():
			fmt.Println("lost")
			return 3
		case <-ctx.Done():
			return 0
		}
	}
	if err := lock.Release(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		return 1
	}
	return 0
}

// startHelper starts the test binary as a Go-client lock holder or waiter.
func (c *cluster) startHelper(name, lock string, ttl time.Duration, hold bool) *proc {
	c.t.Helper()
	self, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	h := "0"
	if hold {
		h = "1"
	}
	env := []string{helperRoleEnv + "=acquire", helperConfig + "=" + c.config, helperName + "=" + lock, helperTTL + "=" + ttl.String(), helperHold + "=" + h}
	return startProc(c.t, name, self, env)
}
