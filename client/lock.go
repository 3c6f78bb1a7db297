package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// LockOptions shape one Acquire.
type LockOptions struct {
	// Shared asks for a shared lock, held together with other shared
	// holders; the default is exclusive.
	Shared bool
	// Metadata is kept with the grant and shown by LockStatus (at most
	// 4 KiB by default).
	Metadata []byte
	// LockDelay keeps the lock from being granted again for this long if
	// this grant ends because the session expired (not on Release), so
	// that a paused holder has time to notice. Default 0, no delay; the
	// cluster's maximum is a minute by default.
	LockDelay time.Duration
}

// Lock is a granted lock. Its fencing token is strictly greater than every
// earlier token of the same name: pass it to the resource the lock guards,
// and let the resource refuse anything older than the newest it has seen.
type Lock struct {
	s       *Session
	name    string
	group   uint32
	session uint64
	token   uint64

	lost     chan struct{}
	loseOnce sync.Once
}

func (s *Session) newLock(name string, g uint32, sid, token uint64) *Lock {
	return &Lock{s: s, name: name, group: g, session: sid, token: token, lost: make(chan struct{})}
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.name }

// Token returns the fencing token of the grant.
func (l *Lock) Token() uint64 { return l.token }

// SessionID returns the ID of the session that holds the lock in its group,
// as Client.ResumeLock takes it.
func (l *Lock) SessionID() uint64 { return l.session }

// Lost returns a channel that is closed as soon as the lock can no longer be
// trusted: the session ended or was lost (see SessionOptions.LostMargin for
// why this happens before the cluster could give the lock to anyone else),
// or the lock was released. Stop using what the lock guards when it closes.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

func (l *Lock) lose() { l.loseOnce.Do(func() { close(l.lost) }) }

func (l *Lock) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

// Renew sends a keep-alive for the lock's session now and waits for the
// answer. It returns nil when the lock is still held, an error matching
// ErrLockLost when it is lost, and an error matching ErrUnavailable when the
// master could not be reached this time (the lock stays valid until Lost
// closes). The session renews itself in the background: Renew is only
// needed to check at a given moment.
func (l *Lock) Renew(ctx context.Context) error {
	if l.isLost() {
		return l.lostErr()
	}
	err := l.s.renew(ctx)
	if err == nil && l.s.checkDeadline() != nil {
		// The round was answered, but this goroutine ran on too late to
		// vouch for the lock: it is lost (Lost is closed by now).
		l.s.dropGrant(l.group, l.session, l.name, l.token)
	}
	if l.isLost() {
		return l.lostErr()
	}
	if err != nil {
		return fmt.Errorf("lockd: renew %q: %w", l.name, err)
	}
	return nil
}

func (l *Lock) lostErr() error {
	if err := l.s.Err(); err != nil {
		if errors.Is(err, ErrLockLost) {
			return fmt.Errorf("lockd: lock %q: %w", l.name, err)
		}
		return fmt.Errorf("lockd: lock %q: %w: %w", l.name, ErrLockLost, err)
	}
	return fmt.Errorf("lockd: lock %q: %w (it was released)", l.name, ErrLockLost)
}

// Release gives the lock up. Lost closes first, since the cluster may
// grant the lock to someone else as soon as it applies the release. It
// returns an error matching ErrLockLost when the lock had been lost before
// (and nil when it was already released by this Lock).
func (l *Lock) Release(ctx context.Context) error {
	s := l.s
	s.mu.Lock()
	mine := s.names[l.name] == l
	if mine {
		delete(s.names, l.name)
	}
	serr := s.err
	s.mu.Unlock()
	wasLost := l.isLost()
	l.lose()
	if !mine {
		return nil // released before
	}
	if serr != nil || wasLost {
		return l.lostErr()
	}
	return s.release(ctx, l.group, l.session, l.name, l.token, true)
}

// release releases a grant on the cluster. With watch, it gives up as soon
// as the session ends (which frees the lock on the cluster anyway), with
// the session's error.
func (s *Session) release(ctx context.Context, g uint32, sid uint64, name string, token uint64, watch bool) error {
	c := s.c
	seq := c.seqs.begin()
	defer c.seqs.done(seq)
	req := &wire.Msg{Type: wire.TypeRelease, Group: g, Session: sid, Name: name, Token: token, Client: c.id, Seq: seq}
	o := callOpts{group: int(g)}
	if watch {
		o.s = s
	}
	x, err := c.invoke(ctx, req, o)
	if err != nil {
		return fmt.Errorf("%s: %w", describe(req), err)
	}
	if x.resp.Code != wire.CodeOK {
		return fmt.Errorf("%s: %w", describe(req), errorFor(&x.resp, ErrLockLost))
	}
	return nil
}

// Acquire acquires the lock name, waiting in the lock's FIFO queue while
// others hold it, until it is granted or ctx ends. When ctx ends it takes
// the request out of the queue (or releases a grant that raced with it) and
// returns an error wrapping ctx's error. If the master changes or its
// connection breaks during the wait, the request is sent again, as the same
// command, to the new master.
//
// When the session ends meanwhile (Done closes), Acquire returns at once,
// whatever the connection is doing, with the session's error (matching
// ErrSessionExpired, or ErrClosed after Client.Close). A grant that comes
// when the session is past its deadline (see SessionOptions.LostMargin),
// say to a process that was paused, is not returned: Acquire releases it
// in the background and ends the session. TryAcquire, Lock.Renew,
// Lock.Release and Client.ResumeLock do the same.
//
// A session asks for one name once at a time: Acquire of a name the
// session holds or is acquiring fails with CodeInvalid.
func (s *Session) Acquire(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	return s.acquire(ctx, name, opts, true)
}

// TryAcquire acquires the lock name if it is free now, and otherwise
// returns an error matching ErrLockHeld at once.
func (s *Session) TryAcquire(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	return s.acquire(ctx, name, opts, false)
}

func (s *Session) acquire(ctx context.Context, name string, o LockOptions, wait bool) (*Lock, error) {
	op := fmt.Sprintf("lockd: Acquire %q", name)
	if name == "" {
		return nil, &Error{Code: CodeInvalid, Message: "the lock name is empty"}
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if l, busy := s.names[name]; busy {
		s.mu.Unlock()
		if l != nil {
			return nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("the session already holds %q (token %d): use that Lock", name, l.token)}
		}
		return nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("the session is already acquiring %q", name)}
	}
	s.names[name] = nil
	s.mu.Unlock()

	l, err := s.acquireNamed(ctx, name, o, wait)
	if err == nil {
		// The moment of the hand-over: a grant that arrives when the
		// session is past its deadline (the process was paused, say) is
		// not trusted, even if the keep-alive loop has not noticed yet.
		s.checkDeadline()
	}

	s.mu.Lock()
	if err == nil && s.err != nil {
		// Granted as the session ended, or past its deadline.
		err = fmt.Errorf("%w: %w", ErrLockLost, s.err)
		s.dropGrant(l.group, l.session, l.name, l.token)
	}
	if err != nil {
		delete(s.names, name)
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	s.names[name] = l
	s.mu.Unlock()
	return l, nil
}

func (s *Session) acquireNamed(ctx context.Context, name string, o LockOptions, wait bool) (*Lock, error) {
	c := s.c
	g := c.groupOf(name)
	sid, err := s.groupSession(ctx, g)
	for wait && err != nil {
		// The session opens in g lazily, here: a waiting Acquire waits
		// through an election for that as for the grant.
		if err = s.waitOutElection(ctx, name, err); err == nil {
			sid, err = s.groupSession(ctx, g)
		}
	}
	if err != nil {
		return nil, err
	}
	a := &acquisition{s: s, g: g, sid: sid, seq: c.seqs.begin()}
	a.req = wire.Msg{Type: wire.TypeAcquire, Group: g, Session: sid, Name: name, Client: c.id, Seq: a.seq,
		Metadata: o.Metadata, LockDelay: o.LockDelay}
	if o.Shared {
		a.req.Flags |= wire.FlagShared
	}
	if wait {
		a.req.Flags |= wire.FlagWait
	}
	token, err := a.run(ctx)
	if err != nil {
		return nil, err
	}
	return s.newLock(name, g, sid, token), nil
}
