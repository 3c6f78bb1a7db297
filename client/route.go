package client

import (
	"slices"
	"sync"
	"time"

	"github.com/lockd/lockd/internal/wire"
)

// route is where the client believes a group's master is.
type route struct {
	node  uint32
	addr  string // "" when unknown
	epoch uint64 // of the master change it was learned from; 0 from a hint
}

// router is the client's map of the cluster: the nodes and each group's
// master. It is only ever a guess: a wrong guess costs a redirect.
//
// The nodes follow membership changes (lockctl members add, remove,
// replace), so that a running client survives the replacement of every
// node it was configured with:
//
//   - Every member list (a Hello, ClusterStatus or WatchMasters answer)
//     replaces the nodes: a node no longer listed is forgotten, a new one
//     is added. Requests for any node, and keep-alives of a group whose
//     master is unknown, go to these nodes only; the configured endpoints
//     stand in for them until the first list arrives.
//   - A redirect hint or a master change that names a node not in the
//     list, or at another address, adds it at once and asks for a fresh
//     list.
//   - A member that fails (a dial, a lost connection, a request or
//     keep-alive left unanswered) asks for a fresh list too: it may have
//     left; so does a keep-alive round in which no node confirmed a group
//     (its master may be a node not known yet). The client asks the
//     members that are up with a Hello, and takes the first answer
//     (Client.refreshMembers), at most every memberRefreshGap, and every
//     memberRefreshEvery in any case.
//   - When no member answers, the Hello goes to every address ever known:
//     the configured endpoints, every member and every hint since the
//     start. So a client needs a current member in its endpoints only when
//     it starts.
type router struct {
	mu        sync.Mutex // guards every field below
	endpoints []string
	nodes     map[uint32]string // node ID -> address: the members
	addrs     []string          // the members' addresses (the endpoints before any list), sorted
	// known is every address ever known: endpoints, members, hints. A
	// refresh that no member answers asks them all.
	known map[string]bool
	// refresh (cap 1) holds a request for a fresh member list.
	refresh chan struct{}
	masters []route         // by group
	changed []chan struct{} // by group: closed when masters[g] changes
	// down holds the nodes whose connection failed (dial or broken) or
	// that left a request or keep-alive unanswered, with when; a
	// connection or an answer clears it. Requests avoid them
	// while another node will do, and a probe (a Hello, dialing first if
	// needed) learns when they are back, so a redirect naming a crashed
	// master costs no dial timeout.
	down map[string]time.Time
	// probing holds the down nodes being probed (see Client.probe).
	probing map[string]bool
	rr      int
}

func newRouter(endpoints []string) *router {
	r := &router{endpoints: endpoints, nodes: map[uint32]string{}, down: map[string]time.Time{},
		known: map[string]bool{}, refresh: make(chan struct{}, 1)}
	for _, a := range endpoints {
		r.known[a] = true
	}
	r.rebuildLocked()
	return r
}

// setGroups sizes the table; the group count never changes afterwards.
func (r *router) setGroups(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.masters) == n {
		return
	}
	r.masters = make([]route, n)
	r.changed = make([]chan struct{}, n)
	for i := range r.changed {
		r.changed[i] = make(chan struct{})
	}
}

// rebuildLocked sets addrs from nodes, or from the endpoints while no
// member is known.
func (r *router) rebuildLocked() {
	set := map[string]bool{}
	for _, a := range r.nodes {
		if a != "" {
			set[a] = true
			r.known[a] = true
		}
	}
	if len(set) == 0 {
		for _, a := range r.endpoints {
			set[a] = true
		}
	}
	r.addrs = r.addrs[:0]
	for a := range set {
		r.addrs = append(r.addrs, a)
	}
	slices.Sort(r.addrs)
}

// learnStatus takes in the members and masters of a Hello or ClusterStatus:
// the member list, when it has one, replaces the nodes.
func (r *router) learnStatus(m *wire.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(m.Members) > 0 {
		clear(r.nodes)
		for _, it := range m.Members {
			r.nodes[it.ID] = it.Addr
		}
		r.rebuildLocked()
	}
	for _, it := range m.Masters {
		r.learnLocked(it)
	}
}

// learnMaster takes in one master change (a master event).
func (r *router) learnMaster(it wire.MasterItem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.learnLocked(it)
}

func (r *router) learnLocked(it wire.MasterItem) {
	g := int(it.Group)
	if g >= len(r.masters) || it.Epoch < r.masters[g].epoch {
		return
	}
	addr := it.Addr
	if addr == "" && it.Master != 0 {
		addr = r.nodes[it.Master]
	}
	r.meetLocked(it.Master, addr)
	r.setLocked(g, route{node: it.Master, addr: addr, epoch: it.Epoch})
}

// meetLocked takes in that node is at addr (a hint or a master change):
// a node not in the list, or at another address, is added, and a fresh
// list is asked for, since the membership changed.
func (r *router) meetLocked(node uint32, addr string) {
	if node == 0 {
		return
	}
	cur, ok := r.nodes[node]
	if addr == "" {
		if !ok {
			r.wantRefreshLocked()
		}
		return
	}
	if ok && cur == addr {
		return
	}
	r.nodes[node] = addr
	r.rebuildLocked()
	r.wantRefreshLocked()
}

// askRefresh asks for a fresh member list (Client.refreshMembers).
func (r *router) askRefresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wantRefreshLocked()
}

// wantRefreshLocked asks for a fresh member list (Client.refreshMembers).
func (r *router) wantRefreshLocked() {
	select {
	case r.refresh <- struct{}{}:
	default:
	}
}

// learnHint takes in a redirect: node (at addr) serves group g.
func (r *router) learnHint(g uint32, node uint32, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if int(g) >= len(r.masters) || (node == 0 && addr == "") {
		return
	}
	if addr == "" {
		addr = r.nodes[node]
	} else {
		r.meetLocked(node, addr)
	}
	r.setLocked(int(g), route{node: node, addr: addr, epoch: r.masters[g].epoch})
}

// forget drops addr as g's master (it failed, or said it is not).
func (r *router) forget(g int, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g >= 0 && g < len(r.masters) && r.masters[g].addr == addr && addr != "" {
		r.setLocked(g, route{epoch: r.masters[g].epoch})
	}
}

func (r *router) setLocked(g int, rt route) {
	old := r.masters[g]
	r.masters[g] = rt
	if old.addr != rt.addr {
		close(r.changed[g])
		r.changed[g] = make(chan struct{})
	}
}

// master returns g's master's address, or "" when unknown or down (a
// redirect from a node that has not yet noticed a crash still names the
// crashed master).
func (r *router) master(g int) string {
	a, down := r.masterState(g)
	if down {
		return ""
	}
	return a
}

// masterState returns g's master's address, if known, and whether it is
// down.
func (r *router) masterState(g int) (addr string, down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g < 0 || g >= len(r.masters) {
		return "", false
	}
	a := r.masters[g].addr
	_, down = r.down[a]
	return a, down
}

// changes returns a channel closed at the next change of g's master.
func (r *router) changes(g int) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed[g]
}

// pick returns where to send a request for group g (-1: any node): its
// master when known and up, otherwise the next node in turn that is up and
// not avoid; when every node is down, the one that failed longest ago.
func (r *router) pick(g int, avoid string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g >= 0 && g < len(r.masters) {
		a := r.masters[g].addr
		if _, down := r.down[a]; a != "" && !down {
			return a
		}
	}
	var fallback string
	for i := range r.addrs {
		a := r.addrs[(r.rr+i)%len(r.addrs)]
		if a == avoid {
			continue
		}
		since, down := r.down[a]
		if !down {
			r.rr = (r.rr + i + 1) % len(r.addrs)
			return a
		}
		if fallback == "" || since.Before(r.down[fallback]) {
			fallback = a
		}
	}
	if fallback == "" {
		fallback = avoid
	}
	return fallback
}

// markDown avoids addr until a connection to it succeeds, and forgets it as
// master of any group. A member that fails may have left the cluster: a
// fresh member list is asked for.
func (r *router) markDown(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down[addr] = time.Now()
	if slices.Contains(r.addrs, addr) {
		r.wantRefreshLocked()
	}
	for g := range r.masters {
		if r.masters[g].addr == addr {
			r.setLocked(g, route{epoch: r.masters[g].epoch})
		}
	}
}

// markUp clears addr's failure record: it connected or answered.
func (r *router) markUp(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.down) > 0 {
		delete(r.down, addr)
	}
}

// refreshTargets returns where to ask for a fresh member list: the members
// that are up, in turn, and, should none answer, every other address ever
// known (down members, endpoints, hints).
func (r *router) refreshTargets() (up, rest []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.addrs {
		a := r.addrs[(r.rr+i)%len(r.addrs)]
		if _, down := r.down[a]; !down {
			up = append(up, a)
		}
	}
	for a := range r.known {
		if !slices.Contains(up, a) {
			rest = append(rest, a)
		}
	}
	slices.Sort(rest)
	return up, rest
}

// all returns the members' addresses (the endpoints before any list).
func (r *router) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.addrs)
}
