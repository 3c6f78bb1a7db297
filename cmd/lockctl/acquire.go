package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
)

// Defaults of the lock commands.
const (
	// defaultHeldTTL is the session TTL while lockctl runs CMD: short, so
	// that the lock comes free soon after lockctl dies.
	defaultHeldTTL = 10 * time.Second
	// defaultDetachedTTL is the TTL of a lock left held after lockctl
	// exits: long enough to renew it from a script.
	defaultDetachedTTL = 60 * time.Second
	defaultKillGrace   = 2 * time.Second
)

func lockFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "ttl", Usage: "session TTL: how long the lock outlives its last keep-alive (default 10s with CMD, 60s without)"},
		&cli.BoolFlag{Name: "shared", Usage: "a shared lock, held together with other shared holders"},
		&cli.DurationFlag{Name: "lock-delay", Usage: "if the session expires, keep the lock from anyone for this long"},
		&cli.StringFlag{Name: "metadata", Usage: "text kept with the grant, shown by lockctl status NAME"},
		&cli.BoolFlag{Name: "stdin", Usage: "with CMD: give CMD lockctl's standard input (default: CMD reads /dev/null, so that it cannot stop on a terminal read while holding the lock)"},
		&cli.DurationFlag{Name: "kill-grace", Value: defaultKillGrace, Usage: "with CMD: after the lock is lost, SIGTERM, then SIGKILL after this long; the session gives up this much earlier, so CMD is dead before anyone else can get the lock"},
	}
}

func acquireCommand() *cli.Command {
	return &cli.Command{
		Name:      "acquire",
		Usage:     "acquire a lock; run CMD while holding it, or leave it held",
		ArgsUsage: "NAME [-- CMD ARGS...]",
		Description: `With CMD: acquire NAME, run CMD with LOCKD_NAME, LOCKD_FENCING_TOKEN and
LOCKD_SESSION in its environment, and release when CMD exits; lockctl exits
with CMD's code. Signals to lockctl are passed on to CMD. If the lock is
lost, CMD gets SIGTERM at once, SIGKILL --kill-grace later, and lockctl exits
with 5. The session gives the lock up --kill-grace earlier than it otherwise
would, so CMD is gone before the cluster could grant the lock to anyone else.
CMD reads /dev/null unless --stdin is given: a command that read the
terminal would stop there (SIGTTIN) with the lock held. On Linux, CMD is
killed (SIGKILL) if lockctl itself dies, even by SIGKILL.

Without CMD: acquire NAME, print its fencing token and session, and exit
leaving the lock held for --ttl (default 60s) after the last keep-alive.
Keep it with lockctl renew, give it up with lockctl release.

--wait=false fails at once (exit 4) when the lock is held; otherwise lockctl
waits in the lock's queue, for at most --timeout when set (exit 4 then).

SIGINT (Ctrl-C), SIGTERM or SIGHUP while lockctl waits: the wait leaves the
lock's queue and the session is closed before lockctl exits with 128+N
(130, 143, 129). While CMD runs: CMD gets the signal, lockctl waits for it
to exit, releases the lock and exits with 128+N.`,
		Flags: append(lockFlags(), &cli.BoolFlag{Name: "wait", Value: true, Usage: "wait in the queue while the lock is held"}),
		Action: func(c *cli.Context) error {
			name, err := oneName(c, "acquire NAME [-- CMD ARGS...]")
			if err != nil {
				return err
			}
			argv, dashdash := commandArgs(c)
			if dashdash && len(argv) == 0 {
				return usageErrorf("nothing after --: give the command to run, or leave out --")
			}
			o := holdOpts{name: name, wait: c.Bool("wait"), argv: argv, killGrace: c.Duration("kill-grace"), stdin: c.Bool("stdin"),
				lock: client.LockOptions{Shared: c.Bool("shared"), LockDelay: c.Duration("lock-delay"), Metadata: []byte(c.String("metadata"))}}
			o.ttl = c.Duration("ttl")
			if o.ttl == 0 {
				o.ttl = defaultDetachedTTL
				if len(argv) > 0 {
					o.ttl = defaultHeldTTL
				}
			}
			if len(argv) == 0 {
				return acquireDetached(c, o)
			}
			return runHeld(c, o)
		},
	}
}

func electCommand() *cli.Command {
	return &cli.Command{
		Name:      "elect",
		Usage:     "run CMD while this process is the leader of NAME",
		ArgsUsage: "NAME -- CMD ARGS...",
		Description: `Campaign for leadership of NAME (wait for its lock), then run CMD as the
leader, with LOCKD_NAME, LOCKD_FENCING_TOKEN and LOCKD_SESSION in its
environment, reading /dev/null unless --stdin is given. If leadership is lost, CMD gets SIGTERM at once and SIGKILL
--kill-grace later, and lockctl exits with 5; when CMD exits by itself,
leadership is given up and lockctl exits with CMD's code. The metadata
(default HOST:PID) shows who leads in lockctl status NAME.

SIGINT, SIGTERM or SIGHUP while lockctl campaigns: it leaves the queue,
closes its session and exits with 128+N; while CMD runs, CMD gets the
signal, and lockctl gives up leadership once CMD has exited and exits with
128+N.`,
		Flags: lockFlags(),
		Action: func(c *cli.Context) error {
			name, err := oneName(c, "elect NAME -- CMD ARGS...")
			if err != nil {
				return err
			}
			argv, _ := commandArgs(c)
			if len(argv) == 0 {
				return usageErrorf("elect needs a command: lockctl elect NAME -- CMD ARGS...")
			}
			meta := c.String("metadata")
			if !c.IsSet("metadata") {
				host, _ := os.Hostname()
				meta = host + ":" + strconv.Itoa(os.Getpid())
			}
			ttl := c.Duration("ttl")
			if ttl == 0 {
				ttl = defaultHeldTTL
			}
			return runHeld(c, holdOpts{name: name, wait: true, argv: argv, ttl: ttl, killGrace: c.Duration("kill-grace"), stdin: c.Bool("stdin"),
				lock: client.LockOptions{Shared: c.Bool("shared"), LockDelay: c.Duration("lock-delay"), Metadata: []byte(meta)}})
		},
	}
}

// oneName returns the command's single argument, the lock name.
func oneName(c *cli.Context, usage string) (string, error) {
	if c.NArg() != 1 || c.Args().First() == "" {
		return "", usageErrorf("want one lock name: lockctl %s", usage)
	}
	return c.Args().First(), nil
}

type holdOpts struct {
	name      string
	lock      client.LockOptions
	ttl       time.Duration
	wait      bool
	killGrace time.Duration
	argv      []string
	stdin     bool // CMD reads lockctl's stdin (else /dev/null)
}

// acquire acquires o.name within --timeout, mapping its failures to exit
// codes.
func acquire(c *cli.Context, s *client.Session, o holdOpts) (*client.Lock, error) {
	ctx := c.Context
	// --timeout 0 waits for the lock as long as it takes, through an
	// election too (a waiting client.Acquire does so without a deadline).
	if d := c.Duration("timeout"); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	var l *client.Lock
	var err error
	if o.wait {
		l, err = s.Acquire(ctx, o.name, o.lock)
	} else {
		l, err = s.TryAcquire(ctx, o.name, o.lock)
	}
	switch {
	case err == nil:
		return l, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return nil, &exitErr{code: exitTimeout, err: fmt.Errorf("lock %q: not granted within --timeout %v", o.name, c.Duration("timeout"))}
	case errors.Is(err, client.ErrLockHeld):
		// In the user's terms: the server's text names its internals.
		return nil, &exitErr{code: exitTimeout, err: fmt.Errorf("lock %q is held by another session, so it was not acquired (--wait=false); without --wait=false lockctl waits for it", o.name)}
	}
	return nil, err
}

// acquireDetached acquires the lock and exits leaving it held: the client
// closes without closing the session, which lives on for its TTL.
//
// A stop signal while it waits cancels the wait and closes the session,
// like any other failure: nothing is left in the lock's queue.
func acquireDetached(c *cli.Context, o holdOpts) error {
	sw := watchSignals(c.Context)
	defer sw.stop()
	parent := c.Context
	c.Context = sw.ctx
	defer func() { c.Context = parent }()
	ctx, cl, done, err := dialOp(c)
	if err != nil {
		return interrupted(sw, o.name, err)
	}
	defer done()
	s, err := cl.NewSession(ctx, client.SessionOptions{TTL: o.ttl})
	if err != nil {
		return interrupted(sw, o.name, &exitErr{code: exitUsage, err: err})
	}
	l, err := acquire(c, s, o)
	if err != nil {
		closeSession(s)
		return interrupted(sw, o.name, err)
	}
	if sig := sw.signal(); sig != nil {
		releaseAndClose(s, l)
		return interrupted(sw, o.name, err)
	}
	p := newPrinter(c)
	if p.json {
		return p.event("acquired", lockJSON{Name: l.Name(), Token: l.Token(), Session: l.SessionID(), TTLSeconds: o.ttl.Seconds()})
	}
	p.table([]string{"LOCK", "TOKEN", "SESSION", "TTL"}, [][]string{{l.Name(), u64(l.Token()), u64(l.SessionID()), o.ttl.String()}})
	p.linef("held for %v after the last keep-alive; keep it:  lockctl renew %s --session %d --token %d --ttl %v", o.ttl, l.Name(), l.SessionID(), l.Token(), o.ttl)
	p.linef("give it up:  lockctl release %s --session %d --token %d", l.Name(), l.SessionID(), l.Token())
	return nil
}

// lockJSON is a lock's line of --json output, after "kind" and "time"
// (printer.event).
type lockJSON struct {
	Name       string  `json:"name"`
	Token      uint64  `json:"token,omitempty"`
	Session    uint64  `json:"session,omitempty"`
	TTLSeconds float64 `json:"ttl_seconds,omitempty"`
	Error      string  `json:"error,omitempty"`
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func resumeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Uint64Flag{Name: "session", Required: true, Usage: "the session ID that lockctl acquire printed"},
		&cli.Uint64Flag{Name: "token", Required: true, Usage: "the fencing token that lockctl acquire printed"},
		&cli.DurationFlag{Name: "ttl", Value: defaultDetachedTTL, Usage: "the TTL the lock was acquired with"},
	}
}

func renewCommand() *cli.Command {
	return &cli.Command{
		Name:      "renew",
		Usage:     "keep alive a lock that lockctl acquire left held",
		ArgsUsage: "NAME --session ID --token T",
		Description: `Send a keep-alive for the session that holds NAME, so that the lock stays
held for another --ttl, and check that the session still holds it under
that token. Exits with 5 when it does not.`,
		Flags: resumeFlags(),
		Action: func(c *cli.Context) error {
			l, cl, err := resume(c, "renew NAME --session ID --token T")
			if err != nil {
				return err
			}
			defer cl.Close()
			p := newPrinter(c)
			if p.json {
				return p.event("renewed", lockJSON{Name: l.Name(), Token: l.Token(), Session: l.SessionID(), TTLSeconds: c.Duration("ttl").Seconds()})
			}
			p.linef("renewed %s (token %d, session %d): held for %v after this keep-alive", l.Name(), l.Token(), l.SessionID(), c.Duration("ttl"))
			return nil
		},
	}
}

func releaseCommand() *cli.Command {
	return &cli.Command{
		Name:        "release",
		Usage:       "release a lock that lockctl acquire left held",
		ArgsUsage:   "NAME --session ID --token T",
		Description: "Release NAME, held by the session under the token that lockctl acquire printed. Exits with 5 when the session does not hold it under that token (any more).",
		Flags:       resumeFlags(),
		Action: func(c *cli.Context) error {
			l, cl, err := resume(c, "release NAME --session ID --token T")
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := opContext(c)
			defer cancel()
			if err := l.Release(ctx); err != nil {
				return err
			}
			p := newPrinter(c)
			if p.json {
				return p.event("released", lockJSON{Name: l.Name(), Token: l.Token(), Session: l.SessionID()})
			}
			p.linef("released %s (token %d)", l.Name(), l.Token())
			return nil
		},
	}
}

// resume connects and takes over the lock named by the arguments.
func resume(c *cli.Context, usage string) (*client.Lock, *client.Client, error) {
	name, err := oneName(c, usage)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := opContext(c)
	defer cancel()
	cl, err := connect(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	l, err := cl.ResumeLock(ctx, name, c.Uint64("session"), c.Uint64("token"), client.SessionOptions{TTL: c.Duration("ttl")})
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return l, cl, nil
}
