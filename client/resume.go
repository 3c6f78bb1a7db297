package client

import (
	"context"
	"errors"
	"fmt"
)

// ResumeLock takes over a lock that an earlier process acquired and left
// held, such as `lockctl acquire` without a command: session is the
// session's ID in the lock's group (Lock.SessionID) and token the grant's
// fencing token. opts.TTL must be the TTL the session was opened with: the
// keep-alive pace and the Lost deadline are computed from it, and the
// cluster does not tell it.
//
// ResumeLock sends a keep-alive for the session and checks that it holds
// the lock under token; it fails with an error matching ErrLockLost
// otherwise. The returned Lock belongs to a new Session that keeps the
// session alive from now on and can Release it. Closing the Client without
// releasing leaves the lock held until its TTL runs out again.
func (c *Client) ResumeLock(ctx context.Context, name string, session, token uint64, opts SessionOptions) (*Lock, error) {
	op := fmt.Sprintf("lockd: resume lock %q (session %d, token %d)", name, session, token)
	if name == "" || session == 0 || token == 0 {
		return nil, fmt.Errorf("%s: %w", op, &Error{Code: CodeInvalid, Message: "the name, the session ID and the token are all required"})
	}
	g := c.groupOf(name)
	s, err := c.startSession(opts, map[uint32]*groupSession{g: {id: session}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	detach := func() {
		s.fail(ErrClosed) // not Close: the session is not ours to end
		s.stopLoop()
	}
	if err := s.renewThroughHandover(ctx); err != nil {
		detach()
		if serr := s.Err(); serr != nil && serr != ErrClosed {
			err = serr
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	info, err := c.lockStatus(ctx, name, s)
	if err != nil {
		detach()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	held := false
	for _, h := range info.Holders {
		held = held || (h.Session == session && h.Token == token)
	}
	if !held {
		detach()
		return nil, fmt.Errorf("%s: %w: the session does not hold it under that token", op, ErrLockLost)
	}
	l := s.newLock(name, g, session, token)
	// As Acquire does: a lock whose session passed its deadline while
	// this ran (a paused process) is not handed out.
	s.checkDeadline()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		s.dropGrant(g, session, name, token)
		return nil, fmt.Errorf("%s: %w: %w", op, ErrLockLost, s.err)
	}
	s.names[name] = l
	return l, nil
}

// renewThroughHandover renews the session, and retries with backoff while
// no master confirms it: right after a cluster starts, or while a group
// moves to another node, a keep-alive round finds no master for a moment
// (ErrUnavailable), and the session is still alive until its deadline. It
// gives up after maxAttempts rounds, when ctx ends, or when the session
// does (its deadline passed, or a master said it is gone).
func (s *Session) renewThroughHandover(ctx context.Context) error {
	var err error
	for n := 1; n <= maxAttempts; n++ {
		if n > 1 {
			if serr := sleepFor(ctx, s, backoff(n-1)); serr != nil {
				return serr
			}
		}
		if err = s.renew(ctx); err == nil || !errors.Is(err, ErrUnavailable) {
			return err
		}
	}
	return err
}
