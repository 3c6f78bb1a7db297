package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/quicnet"
)

// Client is a connection to a lockd cluster. It keeps one QUIC connection
// per node it talks to, opened when first needed, and routes each request
// to the master of the lock's group. Its methods are safe for concurrent
// use. Close it when done.
type Client struct {
	cfg    Config
	log    *slog.Logger
	clk    clock  // the keep-alive clock; tests replace it before use
	id     uint64 // the Client of every command id, in [1, 2^63)
	groups int    // the cluster's group count, learned from Hello
	reqID  atomic.Uint64
	seqs   *seqTracker
	route  *router
	// dropSends makes every frame the client sends vanish, as in a
	// partition; tests set it to watch Lost close.
	dropSends atomic.Bool
	// dial connects to one node: quicnet.Dial, or a test's wrapper that
	// can cut the client off the network.
	dial func(ctx context.Context, addr string, tlsConf *tls.Config) (*quicnet.Conn, error)

	// ctx ends when the client closes: it stops dials, connections and
	// background loops.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the client started

	mu       sync.Mutex // guards the fields below
	closed   bool
	conns    map[string]*conn
	sessions map[*Session]struct{}
	watches  map[string]*nameWatch
}

// New validates cfg, connects to its endpoints and learns the cluster from
// the first that answers: the group count, the nodes and each group's
// master. It dials every endpoint at once, so a dead one costs nothing while
// another answers, and fails, with an error matching ErrUnavailable, when
// none answers within ctx and DialTimeout.
func New(ctx context.Context, cfg Config) (*Client, error) { return newWith(ctx, cfg, nil) }

// newWith is New, with tune (when set) applied to the Client before it
// dials anything: tests replace its dial there.
func newWith(ctx context.Context, cfg Config, tune func(*Client)) (*Client, error) {
	cfg, err := cfg.build()
	if err != nil {
		return nil, err
	}
	c := newClient(cfg)
	if tune != nil {
		tune(c)
	}
	ready := make(chan *conn, len(cfg.Endpoints)) // room for every dial's end
	for _, ep := range cfg.Endpoints {
		cn, err := c.connect(ep)
		if err != nil {
			return nil, err
		}
		cn.notify(func() { ready <- cn })
	}
	var errs []error
	for range cfg.Endpoints {
		var cn *conn
		select {
		case cn = <-ready:
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
		}
		if cn == nil {
			break
		}
		if cn.dialErr != nil {
			errs = append(errs, cn.dialErr)
			continue
		}
		x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeHello}, callOpts{group: -1, addr: cn.addr})
		if err == nil && x.resp.Code == wire.CodeOK && x.resp.Groups > 0 {
			c.groups = int(x.resp.Groups)
			c.route.setGroups(c.groups)
			c.route.learnStatus(&x.resp)
			c.startRefresh()
			return c, nil
		}
		if err == nil {
			err = errorFor(&x.resp, nil)
		}
		errs = append(errs, fmt.Errorf("%s: %w", cn.addr, err))
	}
	c.Close()
	return nil, fmt.Errorf("lockd: no endpoint answered: %w: %w", ErrUnavailable, errors.Join(errs...))
}

func newClient(cfg Config) *Client {
	c := &Client{
		cfg: cfg, log: cfg.Logger, clk: realClock{}, dial: quicnet.Dial,
		id:    rand.Uint64N(1<<63-1) + 1,
		seqs:  newSeqTracker(),
		route: newRouter(cfg.Endpoints),
		conns: map[string]*conn{}, sessions: map[*Session]struct{}{}, watches: map[string]*nameWatch{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Close ends every session's keep-alive (without closing the sessions on
// the cluster), every watch and every connection. Their locks' Lost
// channels close, but the cluster frees the locks only when the sessions'
// TTLs run out: call Session.Close first to release them at once. lockctl
// relies on this to leave a lock held after it exits.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	sessions := make([]*Session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	for _, s := range sessions {
		s.fail(ErrClosed)
	}
	c.cancel() // first, so that no loop waits on the network while stopping
	for _, s := range sessions {
		s.stopLoop()
	}
	c.wg.Wait()
	return nil
}

// groupOf maps a lock name to its group.
func (c *Client) groupOf(name string) uint32 { return wire.GroupOf(name, c.groups) }

// Member is one node of the cluster.
type Member struct {
	ID   uint32 `json:"id"`
	Addr string `json:"addr"`
	// Up says whether the answering node has a live connection to it.
	Up bool `json:"up"`
}

// Master is one group's master as a node knows it.
type Master struct {
	Group uint32 `json:"group"`
	// Epoch orders the master changes of a group.
	Epoch uint64 `json:"epoch"`
	// Node is the master's ID, 0 when the group has no master.
	Node uint32 `json:"node"`
	Addr string `json:"addr,omitempty"`
}

// Status is the cluster as one node sees it.
type Status struct {
	// Node is the node that answered.
	Node    uint32   `json:"node"`
	Groups  int      `json:"groups"`
	Members []Member `json:"members"`
	Masters []Master `json:"masters"`
	// Rules is a digest of the answering node's access rules file ("none"
	// without one; empty from a node too old to say). Each node checks
	// requests against its own file, so every node should show the same.
	Rules string `json:"rules,omitempty"`
}

// ClusterStatus asks any node for the members and the group masters.
func (c *Client) ClusterStatus(ctx context.Context) (*Status, error) {
	return c.clusterStatus(ctx, callOpts{group: -1})
}

// NodeStatus asks the node at addr (a member's Addr) for the cluster as it
// sees it, with its own access rules digest: comparing the nodes' Rules
// shows a cluster whose nodes enforce different rules.
func (c *Client) NodeStatus(ctx context.Context, addr string) (*Status, error) {
	return c.clusterStatus(ctx, callOpts{group: -1, addr: addr})
}

func (c *Client) clusterStatus(ctx context.Context, o callOpts) (*Status, error) {
	x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeClusterStatus}, o)
	if err != nil {
		return nil, fmt.Errorf("lockd: cluster status: %w", err)
	}
	m := &x.resp
	if m.Code != wire.CodeOK {
		return nil, fmt.Errorf("lockd: cluster status: %w", errorFor(m, nil))
	}
	c.route.learnStatus(m)
	st := &Status{Node: m.Node, Groups: int(m.Groups), Rules: m.Rules}
	for _, it := range m.Members {
		st.Members = append(st.Members, Member{ID: it.ID, Addr: it.Addr, Up: it.Up})
	}
	for _, it := range m.Masters {
		st.Masters = append(st.Masters, Master{Group: it.Group, Epoch: it.Epoch, Node: it.Master, Addr: it.Addr})
	}
	return st, nil
}

// Holder is one holder of a lock.
type Holder struct {
	Session  uint64
	Token    uint64
	Shared   bool
	Metadata []byte
}

// LockInfo is the state of one lock.
type LockInfo struct {
	Name    string
	Held    bool
	Holders []Holder
	// Waiters is the number of queued requests.
	Waiters int
}

// LockStatus returns the holders and the queue length of the lock name. It
// is answered by the group's master and is linearizable.
func (c *Client) LockStatus(ctx context.Context, name string) (*LockInfo, error) {
	return c.lockStatus(ctx, name, nil)
}

// lockStatus is LockStatus on behalf of session s (nil: of none), which it
// gives up, with s's error, when s ends.
func (c *Client) lockStatus(ctx context.Context, name string, s *Session) (*LockInfo, error) {
	m, err := c.read(ctx, wire.TypeLockStatus, name, 0, s)
	if err != nil {
		return nil, err
	}
	info := &LockInfo{Name: name, Held: m.Flags&wire.FlagHeld != 0, Waiters: int(m.Waiters), Holders: holdersOf(m.Holders)}
	return info, nil
}

// holdersOf converts the holder items of an answer or an event.
func holdersOf(items []wire.HolderItem) []Holder {
	var hs []Holder
	for _, h := range items {
		hs = append(hs, Holder{Session: h.Session, Token: h.Token, Shared: h.Shared, Metadata: h.Metadata})
	}
	return hs
}

// Validate reports whether token is the fencing token of a current holder
// of the lock name (Chubby's CheckSequencer), for resources that cannot keep
// the highest token they have seen. It is answered by the group's master and
// is linearizable.
func (c *Client) Validate(ctx context.Context, name string, token uint64) (bool, error) {
	m, err := c.read(ctx, wire.TypeValidate, name, token, nil)
	if err != nil {
		return false, err
	}
	return m.Flags&wire.FlagValid != 0, nil
}

func (c *Client) read(ctx context.Context, t wire.Type, name string, token uint64, s *Session) (*wire.Msg, error) {
	if name == "" {
		return nil, errors.New("lockd: the lock name is empty")
	}
	g := c.groupOf(name)
	req := &wire.Msg{Type: t, Group: g, Name: name, Token: token}
	x, err := c.invoke(ctx, req, callOpts{group: int(g), s: s})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe(req), err)
	}
	if x.resp.Code != wire.CodeOK {
		return nil, fmt.Errorf("%s: %w", describe(req), errorFor(&x.resp, nil))
	}
	return &x.resp, nil
}
