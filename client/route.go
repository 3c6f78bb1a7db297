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
// master. It is learned from Hello, redirect hints, keep-alive answers and
// master events, and is only ever a guess: a wrong guess costs a redirect.
type router struct {
	mu        sync.Mutex // guards every field below
	endpoints []string
	nodes     map[uint32]string // node ID -> address
	addrs     []string          // every known address, sorted
	masters   []route           // by group
	changed   []chan struct{}   // by group: closed when masters[g] changes
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
	r := &router{endpoints: endpoints, nodes: map[uint32]string{}, down: map[string]time.Time{}}
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

func (r *router) rebuildLocked() {
	set := map[string]bool{}
	for _, a := range r.endpoints {
		set[a] = true
	}
	for _, a := range r.nodes {
		if a != "" {
			set[a] = true
		}
	}
	r.addrs = r.addrs[:0]
	for a := range set {
		r.addrs = append(r.addrs, a)
	}
	slices.Sort(r.addrs)
}

// learnStatus takes in the members and masters of a Hello or ClusterStatus.
func (r *router) learnStatus(m *wire.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(m.Members) > 0 {
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
	r.setLocked(g, route{node: it.Master, addr: addr, epoch: it.Epoch})
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
// master of any group.
func (r *router) markDown(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down[addr] = time.Now()
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

// all returns every known address.
func (r *router) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.addrs)
}
