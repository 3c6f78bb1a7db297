package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// SessionOptions shape a session.
type SessionOptions struct {
	// TTL is how long the cluster keeps the session (and its locks) after
	// the last keep-alive it received. Default 10s; the cluster refuses
	// less than its minimum (1s by default).
	//
	// A session outlives the failover of a group's master only if the new
	// master answers a keep-alive before the client gives up: within
	// TTL - TTL/3 - LostMargin of the last answered keep-alive, and a
	// failover takes a little more than the master lease (about 2.5s with
	// the default 2s lease). So keep TTL at 6s or more where failovers
	// must not cost sessions.
	TTL time.Duration
	// LostMargin is how much sooner than the cluster the client gives the
	// session up: Lost closes when no keep-alive sent in the last
	// TTL-LostMargin was answered. Default TTL/10 + 100ms; at most TTL/2.
	// Raise it to leave time for cleanup after Lost closes (lockctl adds
	// its --kill-grace).
	LostMargin time.Duration
}

func (o SessionOptions) build() (SessionOptions, error) {
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.TTL < 100*time.Millisecond {
		return o, fmt.Errorf("session options: TTL %v is too short (the cluster's minimum is 1s by default)", o.TTL)
	}
	if o.LostMargin == 0 {
		o.LostMargin = DefaultLostMargin(o.TTL)
	}
	if o.LostMargin < 0 || o.LostMargin > o.TTL/2 {
		return o, fmt.Errorf("session options: LostMargin %v must be between 0 and TTL/2 (%v): raise the TTL", o.LostMargin, o.TTL/2)
	}
	return o, nil
}

// DefaultLostMargin is the LostMargin of a session with this TTL when none
// is given: 10% of the TTL for clock-rate differences between client and
// master, plus 100ms for scheduling delays.
func DefaultLostMargin(ttl time.Duration) time.Duration { return ttl/10 + 100*time.Millisecond }

// Session is a client's lease on the cluster: its locks stay held while
// the session lives. A background goroutine keeps it alive every TTL/3. The
// session is opened in each group (lock names map to groups) when it first
// acquires a lock there, and it ends as a whole: when it expires or is lost
// in any group, all its locks are lost and Done closes.
type Session struct {
	c      *Client
	ttl    time.Duration
	margin time.Duration

	mu     sync.Mutex // guards the fields below
	groups map[uint32]*groupSession
	// names holds the session's locks by name; a nil *Lock marks an
	// Acquire in progress. A session asks for a name once at a time: the
	// cluster would merge two requests into one.
	names map[string]*Lock
	err   error // why the session ended; set once, then done is closed

	done     chan struct{}
	wake     chan struct{}   // cap 1: the groups changed; the loop looks again
	renews   chan chan error // Renew asks the loop for a round
	stop     chan struct{}   // closed to end the loop
	stopOnce sync.Once
	loopDone chan struct{}
}

// groupSession is the session's part in one group.
type groupSession struct {
	id uint64 // 0 while opening
	// lastOK is when the newest keep-alive (or the OpenSession) that the
	// group's master answered OK was sent, on the client's clock. The Lost
	// deadline counts from it; see Session.deadline.
	lastOK  time.Time
	opening chan struct{} // closed when the open ends (either way)
}

// NewSession starts a session. It talks to no node yet: the session is
// opened in a group by the first Acquire there.
func (c *Client) NewSession(ctx context.Context, opts SessionOptions) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.startSession(opts, nil)
}

func (c *Client) startSession(opts SessionOptions, groups map[uint32]*groupSession) (*Session, error) {
	opts, err := opts.build()
	if err != nil {
		return nil, err
	}
	if groups == nil {
		groups = map[uint32]*groupSession{}
	}
	s := &Session{
		c: c, ttl: opts.TTL, margin: opts.LostMargin,
		groups: groups, names: map[string]*Lock{},
		done: make(chan struct{}), wake: make(chan struct{}, 1), renews: make(chan chan error),
		stop: make(chan struct{}), loopDone: make(chan struct{}),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	c.sessions[s] = struct{}{}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		s.run()
	}()
	return s, nil
}

// Done returns a channel that is closed when the session is over: expired,
// lost, or closed. Err says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session lives, and then why it ended (an error
// matching ErrSessionExpired, ErrLockLost or ErrClosed).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// ended returns Done, or nil (a channel that never closes) for a nil
// session: calls that serve a session select on it, so that they end as
// soon as the session does, whatever they wait for.
func (s *Session) ended() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.done
}

// endErr returns the session's error once it has ended, and nil while it
// lives or for a nil session.
func (s *Session) endErr() error {
	if s == nil {
		return nil
	}
	select {
	case <-s.done:
		return s.Err()
	default:
		return nil
	}
}

// expiredErr is the session's error when its deadline passed.
func (s *Session) expiredErr() error {
	return fmt.Errorf("%w: no keep-alive was answered for %v (the TTL %v minus a %v safety margin), so its locks are given up before the cluster could give them away (%w)",
		ErrSessionExpired, s.ttl-s.margin, s.ttl, s.margin, ErrLockLost)
}

// checkDeadline is what a call checks at the moment it would hand out a
// grant: when the session's deadline (see deadline) has passed on the
// client's clock, the session can no longer be trusted, whether or not the
// keep-alive loop has noticed yet (a process paused past its deadline runs
// on without it), so it ends the session now. It returns the session's
// error, nil while the session lives.
func (s *Session) checkDeadline() error {
	if d, ok := s.deadline(); ok && !s.c.clk.Now().Before(d) {
		s.fail(s.expiredErr()) // the keep-alive loop then closes what is left on the cluster
	}
	return s.Err()
}

// dropGrant releases, in the background and within RequestTimeout, a grant
// that is not handed to the caller (its session ended or passed its
// deadline as it came). It is best effort: the cluster frees the lock with
// the session anyway.
func (s *Session) dropGrant(g uint32, sid uint64, name string, token uint64) {
	c := s.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
		defer cancel()
		if err := s.release(ctx, g, sid, name, token, false); err != nil {
			c.log.Debug("lockd: could not release a grant that came after its session's end; the cluster frees it with the session",
				"lock", name, "token", token, "err", err)
		}
	}()
}

// Close ends the session on the cluster, which releases its locks and
// cancels its waits at once. Its locks' Lost channels close first.
func (s *Session) Close(ctx context.Context) error {
	first := s.fail(errSessionClosed)
	s.stopLoop()
	if !first {
		return nil
	}
	s.mu.Lock()
	ids := map[uint32]uint64{}
	for g, gs := range s.groups {
		if gs.id != 0 {
			ids[g] = gs.id
		}
	}
	s.mu.Unlock()
	var errs []error
	for g, id := range ids {
		if err := s.closeGroup(ctx, g, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Session) closeGroup(ctx context.Context, g uint32, id uint64) error {
	c := s.c
	seq := c.seqs.begin()
	defer c.seqs.done(seq)
	x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeCloseSession, Group: g, Session: id, Client: c.id, Seq: seq}, callOpts{group: int(g)})
	if err != nil {
		return fmt.Errorf("lockd: close session %d in group %d: %w", id, g, err)
	}
	if x.resp.Code != wire.CodeOK && x.resp.Code != wire.CodeSessionUnknown {
		return fmt.Errorf("lockd: close session %d in group %d: %w", id, g, errorFor(&x.resp, nil))
	}
	return nil
}

// fail ends the session for err, once, and marks every lock lost. It
// reports whether this call ended it.
func (s *Session) fail(err error) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	s.err = err
	// Every Lost closes before Done, so that whoever sees Done sees the
	// locks lost too.
	for _, l := range s.names {
		if l != nil {
			l.lose()
		}
	}
	close(s.done)
	s.mu.Unlock()
	s.c.mu.Lock()
	delete(s.c.sessions, s)
	s.c.mu.Unlock()
	if !errors.Is(err, ErrClosed) && err != errSessionClosed {
		s.c.log.Warn("lockd: session lost", "err", err)
	}
	return true
}

// stopLoop ends the keep-alive loop and waits for it.
func (s *Session) stopLoop() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.loopDone
}

// poke tells the loop that the groups changed.
func (s *Session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// groupSession returns the session's ID in group g, opening it there first
// if needed. Concurrent callers for one group share one open.
func (s *Session) groupSession(ctx context.Context, g uint32) (uint64, error) {
	s.mu.Lock()
	for {
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		gs := s.groups[g]
		if gs == nil {
			break
		}
		if gs.id != 0 {
			id := gs.id
			s.mu.Unlock()
			return id, nil
		}
		opening := gs.opening
		s.mu.Unlock()
		select {
		case <-opening:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.done:
			return 0, s.Err()
		}
		s.mu.Lock()
	}
	gs := &groupSession{opening: make(chan struct{})}
	s.groups[g] = gs
	s.mu.Unlock()

	id, sent, err := s.openGroup(ctx, g)
	s.mu.Lock()
	close(gs.opening)
	if err != nil {
		delete(s.groups, g)
		s.mu.Unlock()
		return 0, err
	}
	if s.err != nil {
		// Closed while opening: close what was just opened.
		err := s.err
		s.mu.Unlock()
		s.closeGroup(ctx, g, id)
		return 0, err
	}
	gs.id, gs.lastOK = id, sent
	s.mu.Unlock()
	s.poke()
	return id, nil
}

// openGroup opens the session in group g. sent is when the successful
// attempt was sent: the master started the TTL when it applied the open,
// later than that.
func (s *Session) openGroup(ctx context.Context, g uint32) (id uint64, sent time.Time, err error) {
	c := s.c
	seq := c.seqs.begin()
	defer c.seqs.done(seq)
	req := &wire.Msg{Type: wire.TypeOpenSession, Group: g, Client: c.id, Seq: seq, TTL: s.ttl}
	x, err := c.invoke(ctx, req, callOpts{group: int(g), s: s})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("lockd: open session in group %d: %w", g, err)
	}
	if x.resp.Code != wire.CodeOK || x.resp.Session == 0 {
		return 0, time.Time{}, fmt.Errorf("lockd: open session in group %d: %w", g, errorFor(&x.resp, nil))
	}
	return x.resp.Session, x.sent, nil
}
