package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
	"github.com/lockd/lockd/quicnet"
)

// Incarnations: every data dir has a random incarnation, made when it is
// first stamped (pebblestore's state file). Nodes tell each other theirs in
// hello frames, and a node records a peer's incarnation durably before it
// takes any Paxos message from it. So a node whose data dir was wiped or
// replaced (a new incarnation) is known for what it is by every peer that
// ever counted one of its votes: they refuse it, and it exits (exit code 5)
// instead of voting without the promises it forgot.
//
// A node re-created on purpose (lockd run --recover-from-peers, on an empty
// data dir) sends "replace" hellos: its peers record the new incarnation
// and answer with each group's promise and commit index. It waits for every
// peer, takes for each group the highest promise any of them reports (at or
// above any ballot it could have promised before: every such ballot was
// promised by its proposer, a peer, too), and does not vote (drops Prepare
// and Accept) until it has caught up to the highest commit index reported.
// Its peers do not follow it as a proposer meanwhile.
//
// Hellos and acks also carry the sender's founding configuration: the
// cluster's initial configuration, from which every node replays its
// groups' logs (memberfile.go). Every node must replay from the same one:
// membership changes in the log are single-node steps applied on top of it,
// so a node that started from another set of voters would count quorums
// that the others do not share. A node of a new cluster takes it from
// --peers; a node on an empty data dir that enters a running cluster (lockd
// run --join, --recover-from-peers) has none until a member tells it (its
// frames carry an empty one meanwhile), and takes the first one it is told
// before it builds its groups (Server.awaitFounding). A node refuses, and
// logs, a peer whose founding configuration differs from its own.
//
// Frames start with helloMarker (Paxos frames start with the codec version
// or batchMarker):
//
//	hello:  marker, 1, flags (bit 0: replace), sender's incarnation,
//	        founding
//	ack:    marker, 2, sender's incarnation, the incarnation acknowledged,
//	        group count, per group: promised round, promised node, commit;
//	        founding
//	refuse: marker, 3, sender's incarnation, the incarnation it knows for
//	        the receiver, the incarnation refused
//	founding: node count (0: the sender does not know it yet), node ids in
//	        ascending order; a frame that ends before it has none
//
// All integers are uvarints. An ack also counts as a hello from its sender.
const helloMarker = 0xfe

const (
	helloKind  = 1
	ackKind    = 2
	refuseKind = 3
)

// ErrRefused is wrapped by the error Run returns when a peer refused this
// node's incarnation; it wraps pebblestore.ErrDamaged (exit code 5).
var ErrRefused = fmt.Errorf("%w: a peer knows this node by another incarnation", pebblestore.ErrDamaged)

// peerMark is one group's state as a peer reported it in an ack.
type peerMark struct {
	promised paxos.Ballot
	commit   uint64
}

type incarnations struct {
	self paxos.NodeID
	st   *pebblestore.Store
	log  interface {
		Warn(msg string, args ...any)
		Info(msg string, args ...any)
	}
	send func(to paxos.NodeID, frame []byte)
	// spawn runs replies off the receiving goroutine (tests run them
	// inline).
	spawn func(func())

	mu sync.Mutex
	// inc is this data dir's incarnation; known the incarnation recorded
	// for each peer; current the peers whose hello matched in this process.
	inc     uint64
	known   map[paxos.NodeID]uint64
	current map[paxos.NodeID]bool
	// acked: the peers that acknowledged our incarnation in this process,
	// with what they reported.
	acked map[paxos.NodeID][]peerMark
	// recovering: this node must not vote yet; peerRecovering: peers that
	// must not lead yet.
	recovering     bool
	peerRecovering map[paxos.NodeID]bool
	warned         map[paxos.NodeID]bool // refusals logged once
	refused        error
	refusedc       chan struct{}
	ackc           chan struct{} // signalled on every new ack
	// status reads this node's groups for an ack (nil until the replica
	// exists: acks carry no groups then).
	status func(ctx context.Context) []peerMark
	// founding is this node's founding configuration, nil while it waits
	// to be told one; told is the first one a peer told it meanwhile (by
	// toldBy), and toldc is closed when told is set.
	founding []paxos.NodeID
	told     []paxos.NodeID
	toldBy   paxos.NodeID
	toldc    chan struct{}
	// foundingWarned: peers refused for another founding configuration,
	// logged once each.
	foundingWarned map[paxos.NodeID]bool
}

func newIncarnations(self paxos.NodeID, st *pebblestore.Store, log interface {
	Warn(msg string, args ...any)
	Info(msg string, args ...any)
}) *incarnations {
	known := map[paxos.NodeID]uint64{}
	for id, inc := range st.PeerIncarnations() {
		known[paxos.NodeID(id)] = inc
	}
	return &incarnations{self: self, st: st, log: log, spawn: func(f func()) { go f() }, inc: st.Incarnation(), known: known,
		current: map[paxos.NodeID]bool{}, acked: map[paxos.NodeID][]peerMark{}, recovering: st.Recovering(),
		peerRecovering: map[paxos.NodeID]bool{}, warned: map[paxos.NodeID]bool{}, refusedc: make(chan struct{}), ackc: make(chan struct{}, 1),
		toldc: make(chan struct{}), foundingWarned: map[paxos.NodeID]bool{}}
}

// maxFoundingNodes bounds the founding configuration a frame may carry.
const maxFoundingNodes = 1 << 10

func appendHello(inc uint64, replace bool, founding []paxos.NodeID) []byte {
	flags := byte(0)
	if replace {
		flags = 1
	}
	return appendFounding(binary.AppendUvarint([]byte{helloMarker, helloKind, flags}, inc), founding)
}

// appendFounding appends a founding configuration (ascending ids).
func appendFounding(f []byte, founding []paxos.NodeID) []byte {
	f = binary.AppendUvarint(f, uint64(len(founding)))
	for _, id := range founding {
		f = binary.AppendUvarint(f, uint64(id))
	}
	return f
}

// readFounding reads a founding configuration with next; ok is false for a
// malformed one. A frame that ends first carries none.
func readFounding(next func() (uint64, bool), rest func() int) (ids []paxos.NodeID, ok bool) {
	if rest() == 0 {
		return nil, true
	}
	n, ok := next()
	if !ok || n > maxFoundingNodes || n > uint64(rest()) {
		return nil, false
	}
	for range n {
		id, ok := next()
		if !ok || id == 0 || id > 1<<32-1 || (len(ids) > 0 && paxos.NodeID(id) <= ids[len(ids)-1]) {
			return nil, false
		}
		ids = append(ids, paxos.NodeID(id))
	}
	return ids, rest() == 0
}

// setFounding fixes this node's founding configuration (once known).
func (c *incarnations) setFounding(ids []paxos.NodeID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.founding = slices.Clone(ids)
}

// toldFounding returns the founding configuration a peer told this node
// and which peer, or nil if none has yet.
func (c *incarnations) toldFounding() ([]paxos.NodeID, paxos.NodeID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.told), c.toldBy
}

// checkFounding takes in the founding configuration f that peer from sent:
// a node that does not know its own yet is told it (the first one wins);
// one that knows it refuses a peer that sent another. It reports whether
// the frame may be taken.
func (c *incarnations) checkFounding(from paxos.NodeID, f []paxos.NodeID) bool {
	if len(f) == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.founding == nil {
		if c.told == nil {
			c.told, c.toldBy = f, from
			close(c.toldc)
		}
		return true
	}
	if slices.Equal(f, c.founding) {
		return true
	}
	if !c.foundingWarned[from] {
		c.foundingWarned[from] = true
		c.log.Warn("refusing a peer of another cluster: it replays its groups from another founding configuration, so its quorums would not intersect ours; "+
			"the nodes of a new cluster must all start with the same --peers (README, Operations)",
			"peer", from, "its_founding", fmt.Sprint(f), "ours", fmt.Sprint(c.founding))
	}
	c.current[from] = false
	return false
}

// sayHello sends a hello to every peer in peers.
func (c *incarnations) sayHello(peers []paxos.NodeID) {
	c.mu.Lock()
	f := appendHello(c.inc, c.recovering, c.founding)
	c.mu.Unlock()
	for _, p := range peers {
		if p != c.self {
			c.send(p, f)
		}
	}
}

// allows reports whether a Paxos message from peer may be stepped. A
// Server built without incarnations (some tests) allows everything.
func (c *incarnations) allows(m *paxos.Message) bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.current[m.From] || c.acked[m.From] == nil {
		return false
	}
	if m.Type == paxos.MsgPrepare || m.Type == paxos.MsgAccept {
		// A recovering node does not vote, and nobody follows one.
		return !c.recovering && !c.peerRecovering[m.From]
	}
	return true
}

// introduced reports whether peer's current incarnation said hello and was
// acknowledged: snapshot transfer frames, which bypass allows (they are not
// Paxos messages), are taken only from such a peer, so a refused or stale
// incarnation can neither serve nor ask for a group's state. A recovering
// peer is introduced: it catches up by snapshot.
func (c *incarnations) introduced(peer paxos.NodeID) bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current[peer] && c.acked[peer] != nil
}

// onFrame handles a hello, ack or refuse frame from peer.
func (c *incarnations) onFrame(from paxos.NodeID, b []byte) {
	if c == nil || len(b) < 2 {
		return
	}
	kind, r := b[1], b[2:]
	next := func() (uint64, bool) {
		v, k := binary.Uvarint(r)
		if k <= 0 {
			return 0, false
		}
		r = r[k:]
		return v, true
	}
	rest := func() int { return len(r) }
	switch kind {
	case helloKind:
		if len(r) < 1 {
			return
		}
		replace := r[0]&1 != 0
		r = r[1:]
		inc, ok := next()
		if !ok || inc == 0 {
			return
		}
		founding, ok := readFounding(next, rest)
		if !ok || !c.checkFounding(from, founding) {
			return
		}
		if c.admit(from, inc, replace, false) {
			c.spawn(func() { c.ack(from, inc) })
		}
	case ackKind:
		inc, ok1 := next()
		mine, ok2 := next()
		n, ok3 := next()
		if !ok1 || !ok2 || !ok3 || n > 1<<16 || inc == 0 {
			return
		}
		marks := make([]peerMark, 0, n)
		for range n {
			round, a := next()
			node, b := next()
			commit, d := next()
			if !a || !b || !d || node > 1<<32-1 {
				return
			}
			marks = append(marks, peerMark{paxos.Ballot{Round: round, Node: paxos.NodeID(node)}, commit})
		}
		founding, ok := readFounding(next, rest)
		if !ok || !c.checkFounding(from, founding) {
			return
		}
		if !c.admit(from, inc, false, true) {
			return
		}
		c.mu.Lock()
		if mine == c.inc {
			c.acked[from] = marks
		}
		c.mu.Unlock()
		select {
		case c.ackc <- struct{}{}:
		default:
		}
	case refuseKind:
		inc, ok1 := next()
		known, ok2 := next()
		mine, ok3 := next()
		c.mu.Lock()
		defer c.mu.Unlock()
		if !ok1 || !ok2 || !ok3 || mine != c.inc || c.refused != nil {
			return
		}
		_ = inc
		c.refused = fmt.Errorf("%w: node %d knows node %d as incarnation %016x, but this data dir is incarnation %016x: "+
			"the data dir was wiped, replaced or lost its state file, and this node has forgotten promises it made",
			ErrRefused, from, c.self, known, c.inc)
		close(c.refusedc)
	}
}

// admit checks peer's incarnation against the recorded one, records it
// when it is the first (or a replacement), and refuses it otherwise. It
// reports whether the peer is admitted. An ack only admits: it carries no
// replace flag, so it neither refuses nor changes whether the peer is
// recovering; the peer's own hello does.
func (c *incarnations) admit(from paxos.NodeID, inc uint64, replace, ack bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	known := c.known[from]
	switch {
	case ack && known != 0 && known != inc:
		return false
	case known == inc:
	case known == 0 || replace:
		if err := c.st.SetPeerIncarnation(uint32(from), inc); err != nil {
			c.log.Warn("cannot record a peer's incarnation; its messages are dropped", "peer", from, "err", err)
			return false
		}
		if known != 0 {
			c.log.Warn("peer rejoins as a new incarnation (--recover-from-peers): it does not vote or lead until it has caught up",
				"peer", from, "old", fmt.Sprintf("%016x", known), "new", fmt.Sprintf("%016x", inc))
		}
		c.known[from] = inc
	default:
		if c.current[from] || !c.warned[from] {
			c.warned[from] = true
			c.log.Warn("refusing a peer whose data dir is not the one it had: it lost its state; replace it with --recover-from-peers (README, Operations)",
				"peer", from, "known", fmt.Sprintf("%016x", known), "got", fmt.Sprintf("%016x", inc))
		}
		c.current[from] = false
		f := binary.AppendUvarint([]byte{helloMarker, refuseKind}, c.inc)
		f = binary.AppendUvarint(f, known)
		f = binary.AppendUvarint(f, inc)
		c.spawn(func() { c.send(from, f) })
		return false
	}
	c.current[from] = true
	switch {
	case replace:
		c.peerRecovering[from] = true
	case !ack:
		delete(c.peerRecovering, from)
	}
	return true
}

// ack answers an admitted hello of incarnation inc, with this node's groups.
func (c *incarnations) ack(to paxos.NodeID, inc uint64) {
	var marks []peerMark
	c.mu.Lock()
	status := c.status
	c.mu.Unlock()
	if status != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		marks = status(ctx)
		cancel()
	}
	c.mu.Lock()
	f := binary.AppendUvarint([]byte{helloMarker, ackKind}, c.inc)
	founding := c.founding
	c.mu.Unlock()
	f = binary.AppendUvarint(f, inc)
	f = binary.AppendUvarint(f, uint64(len(marks)))
	for _, m := range marks {
		f = binary.AppendUvarint(f, m.promised.Round)
		f = binary.AppendUvarint(f, uint64(m.promised.Node))
		f = binary.AppendUvarint(f, m.commit)
	}
	c.send(to, appendFounding(f, founding))
}

// err returns the refusal, if a peer refused this node.
func (c *incarnations) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

// run says hello to every peer until it acknowledged us, then now and then
// (a restarted peer needs to hear it again), until ctx ends.
//
// peers is asked every round: the members change (members.go), and a node
// added by a membership change must be introduced before its messages count.
func (c *incarnations) run(ctx context.Context, peers func() []paxos.NodeID) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		var to []paxos.NodeID
		ids := peers()
		c.mu.Lock()
		for _, p := range ids {
			if p != c.self && (c.acked[p] == nil || i%10 == 0) {
				to = append(to, p)
			}
		}
		c.mu.Unlock()
		c.sayHello(to)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gatherForRecovery says replace-hellos until every peer acknowledged with
// its groups' state, and returns, per group, the highest promise and commit
// any of them reported. It gives up when ctx ends.
func (c *incarnations) gatherForRecovery(ctx context.Context, peers []paxos.NodeID, groups int) ([]peerMark, error) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		c.sayHello(peers)
		c.mu.Lock()
		var missing []paxos.NodeID
		out := make([]peerMark, groups)
		for _, p := range peers {
			if p == c.self {
				continue
			}
			marks := c.acked[p]
			if len(marks) != groups {
				missing = append(missing, p)
				continue
			}
			for g, m := range marks {
				if out[g].promised.Less(m.promised) {
					out[g].promised = m.promised
				}
				out[g].commit = max(out[g].commit, m.commit)
			}
		}
		refused := c.refused
		c.mu.Unlock()
		if refused != nil {
			return nil, refused
		}
		if len(missing) == 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("recovery needs every other node up and serving, and nodes %v did not answer: %w", missing, ctx.Err())
		case <-t.C:
		case <-c.ackc:
		}
	}
}

// setRecovering turns voting on or off (durably).
func (c *incarnations) setRecovering(on bool) error {
	if err := c.st.SetRecovering(on); err != nil {
		return err
	}
	c.mu.Lock()
	c.recovering = on
	c.mu.Unlock()
	return nil
}

func (c *incarnations) isRecovering() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recovering
}

// ErrRecoverNotEmpty: Config.RecoverFromPeers was set for a data dir that
// holds state.
var ErrRecoverNotEmpty = errors.New("--recover-from-peers needs an empty data dir: it re-creates a node that lost its state; move the old data dir aside first")

// recoverTimeout bounds how long a recovering node waits for every peer.
const recoverTimeout = 2 * time.Minute

// startRecovery runs before the replica exists: it gathers every peer's
// groups and raises this node's stored promises to the highest reported,
// and returns the commit indexes to catch up to before voting.
func (s *Server) startRecovery(ctx context.Context) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	s.log.Warn("recovering from peers: this node does not vote until it has caught up; waiting for every other node to answer")
	marks, err := s.inc.gatherForRecovery(ctx, s.nodeIDs(), s.cfg.Groups)
	if err != nil {
		return nil, err
	}
	var writes []paxos.GroupWrite
	targets := make([]uint64, len(marks))
	for g, m := range marks {
		targets[g] = m.commit
		hs, err := s.store.HardState(paxos.GroupID(g))
		if err != nil {
			return nil, err
		}
		if hs.Promised.Less(m.promised) {
			hs.Promised = m.promised
			writes = append(writes, paxos.GroupWrite{Group: paxos.GroupID(g), Hard: &hs})
		}
	}
	if err := s.store.Save(writes); err != nil {
		return nil, err
	}
	return targets, nil
}

// finishRecovery waits until every group's commit index reached its
// target, then lets the node vote.
func (s *Server) finishRecovery(ctx context.Context, targets []uint64) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		behind := 0
		for g, want := range targets {
			st, err := s.replica.Status(ctx, paxos.GroupID(g))
			if err != nil {
				return
			}
			if st.Commit < want {
				behind++
			}
		}
		if behind == 0 {
			if err := s.inc.setRecovering(false); err != nil {
				s.log.Error("cannot record the end of recovery; still not voting", "err", err)
			} else {
				s.log.Info("recovered from peers: caught up with every group, voting again")
				s.inc.sayHello(s.nodeIDs())
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// groupMarks reads this node's groups for an ack.
func (s *Server) groupMarks(ctx context.Context) []peerMark {
	out := make([]peerMark, s.cfg.Groups)
	for g := range out {
		st, err := s.replica.Status(ctx, paxos.GroupID(g))
		if err != nil {
			return nil
		}
		out[g] = peerMark{promised: st.Promise, commit: st.Commit}
	}
	return out
}

// sendHello is the incarnations' send function over the mesh.
func (s *Server) sendHello(to paxos.NodeID, frame []byte) {
	_ = s.qnode.Send(quicnet.NodeID(to), 0, frame)
}
