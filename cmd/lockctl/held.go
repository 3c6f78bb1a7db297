package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
)

// runHeld acquires the lock, runs the command while it is held, and
// releases the lock when the command exits.
//
// Safety: the session gives the lock up LostMargin before its TTL counted
// from the last keep-alive it sent (see client.SessionOptions), and the
// cluster cannot grant the lock to anyone else before TTL counted from the
// receipt of that keep-alive. lockctl widens LostMargin by --kill-grace,
// so that from Lost closing, SIGTERM at once and SIGKILL --kill-grace
// later both happen before the old margin begins, while the cluster still
// counts this session as the holder. The price is that a longer grace
// means the lock is given up sooner after keep-alives start failing; the
// margin may be at most half the TTL, so a grace that does not fit asks
// for a longer --ttl.
func runHeld(c *cli.Context, o holdOpts) error {
	if o.killGrace < 0 {
		return usageErrorf("--kill-grace %v is negative", o.killGrace)
	}
	margin := client.DefaultLostMargin(o.ttl) + o.killGrace
	if margin > o.ttl/2 {
		return usageErrorf("--kill-grace %v does not fit the --ttl %v: the session must give the lock up %v before the cluster could (more than half the TTL); raise --ttl to at least %v or lower --kill-grace",
			o.killGrace, o.ttl, margin, minTTLFor(o.killGrace))
	}
	// A command that cannot run must not take the lock (or leadership)
	// from anyone first.
	if _, err := exec.LookPath(o.argv[0]); err != nil {
		code := exitNotRunnable
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = exitNotFound
		}
		return &exitErr{code: code, err: fmt.Errorf("cannot run %q: %w; nothing was acquired", o.argv[0], err)}
	}
	sw := watchSignals(c.Context)
	defer sw.stop()
	parent := c.Context
	c.Context = sw.ctx
	defer func() { c.Context = parent }()
	ctx, cl, closeClient, err := dialOp(c)
	if err != nil {
		return interrupted(sw, o.name, err)
	}
	defer closeClient()
	s, err := cl.NewSession(ctx, client.SessionOptions{TTL: o.ttl, LostMargin: margin})
	if err != nil {
		return interrupted(sw, o.name, &exitErr{code: exitUsage, err: err})
	}
	l, err := acquire(c, s, o)
	if err != nil {
		// The client took the wait out of the queue when the context
		// ended; closing the session ends anything that remains of it.
		closeSession(s)
		return interrupted(sw, o.name, err)
	}
	if sig := sw.signal(); sig != nil {
		// Granted as the signal came: give it back before exiting.
		releaseAndClose(s, l)
		return interrupted(sw, o.name, err)
	}
	p := newPrinter(c)
	if !p.json {
		p.w = c.App.ErrWriter // stdout belongs to CMD; --json lines share it, one line each
	}
	report := func(event string, err error) {
		if p.json {
			j := lockJSON{Name: l.Name(), Token: l.Token(), Session: l.SessionID()}
			if err != nil {
				j.Error = err.Error()
			}
			p.event(event, j)
			return
		}
		if err != nil {
			p.linef("lockctl: %s %s (token %d): %v", event, l.Name(), l.Token(), err)
			return
		}
		p.linef("lockctl: %s %s (token %d)", event, l.Name(), l.Token())
	}
	report("acquired", nil)

	cmd := exec.Command(o.argv[0], o.argv[1:]...)
	cmd.Env = append(os.Environ(), "LOCKD_NAME="+o.name, "LOCKD_FENCING_TOKEN="+u64(l.Token()), "LOCKD_SESSION="+u64(l.SessionID()))
	// A nil Stdin is /dev/null.
	cmd.Stdout, cmd.Stderr = c.App.Writer, c.App.ErrWriter
	if o.stdin {
		cmd.Stdin = os.Stdin
	}
	// CMD gets its own process group (so that signals reach its children
	// too), unless it is to read a terminal: only the terminal's
	// foreground group may, and that is lockctl's.
	ownProcessGroup(cmd, o.stdin && isTerminal(os.Stdin))
	// Linux sends CMD the parent-death signal when the thread that started
	// it ends, not the process: this goroutine keeps its thread until CMD
	// has exited (runHeld returns only then).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		releaseAndClose(s, l)
		return &exitErr{code: exitError, err: fmt.Errorf("start %q: %w", o.argv[0], err)}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// The session's loss closes Lost. A release by someone acting for the
	// session (lockctl release with its session and token) does not: the
	// lock's own events tell that.
	wctx, stopWatch := context.WithCancel(parent)
	defer stopWatch()
	events, err := cl.Watch(wctx, o.name)
	if err != nil {
		events = nil // best effort: Lost still covers the session
	}

	lost, done := l.Lost(), parent.Done()
	var kill <-chan time.Time
	wasLost := false
	for {
		select {
		case <-exited:
			if wasLost {
				return &exitErr{code: exitLockLost, err: fmt.Errorf("lock %q lost; %s was stopped", o.name, o.argv[0])}
			}
			code := exitStatus(cmd.ProcessState)
			err = releaseAndClose(s, l)
			report("released", err)
			if sig := sw.signal(); sig != nil {
				// CMD was given the signal and has ended: lockctl
				// reports the signal, as a shell would for itself.
				code = signalCode(sig)
			}
			return &exitErr{code: code}
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			gone := ev.Token == l.Token() && (ev.Kind == client.EventReleased || ev.Kind == client.EventExpired)
			if ev.Kind == client.EventSync {
				gone = !holds(ev.Holders, l)
			}
			if gone && !wasLost {
				lost, wasLost, events = nil, true, nil
				report("lost", fmt.Errorf("the lock was released or expired on the cluster"))
				signalGroup(cmd, syscall.SIGTERM)
				kill = time.After(o.killGrace)
			}
		case <-lost:
			lost, wasLost = nil, true
			report("lost", s.Err())
			signalGroup(cmd, syscall.SIGTERM)
			kill = time.After(o.killGrace)
		case <-kill:
			kill = nil
			signalGroup(cmd, syscall.SIGKILL)
		case sig := <-sw.fwd:
			signalGroup(cmd, sig) // CMD decides; lockctl goes on until it exits
		case <-done:
			done = nil
			signalGroup(cmd, syscall.SIGTERM)
		}
	}
}

// holds reports whether holders include l's grant.
func holds(holders []client.Holder, l *client.Lock) bool {
	for _, h := range holders {
		if h.Token == l.Token() && h.Session == l.SessionID() {
			return true
		}
	}
	return false
}

// minTTLFor is the shortest TTL whose margin fits a kill grace.
func minTTLFor(grace time.Duration) time.Duration {
	// TTL/10 + 100ms + grace <= TTL/2  <=>  TTL >= 2.5 (grace + 100ms)
	return (grace + 100*time.Millisecond) * 5 / 2
}

// interrupted returns the error of a lock command that ended early: when
// a stop signal came, one saying so with the signal's exit code (128+N),
// else err.
func interrupted(sw *sigWatch, name string, err error) error {
	sig := sw.signal()
	if sig == nil {
		return err
	}
	return &exitErr{code: signalCode(sig), err: fmt.Errorf("stopped by %s while waiting for lock %q; its wait is cancelled and its session closed", signalName(sig), name)}
}

// closeSession closes s within a bounded time, best effort: a session that
// cannot be closed ends by itself after its TTL.
func closeSession(s *client.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Close(ctx)
}

// releaseAndClose releases the lock and closes the session, within a
// bounded time.
func releaseAndClose(s *client.Session, l *client.Lock) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := l.Release(ctx)
	if cerr := s.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// exitStatus is CMD's exit code: its own, or 128+N when signal N ended it,
// as shells report it.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return exitError
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := ps.ExitCode(); code >= 0 {
		return code
	}
	return exitError
}
