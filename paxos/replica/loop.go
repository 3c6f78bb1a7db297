package replica

import (
	"context"
	"fmt"
	"math/rand"
	"time"

	"github.com/lockd/lockd/paxos"
)

// New builds a replica from its durable state. It does not start it.
func New(cfg Config) (*Replica, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Core.Rand == nil {
		rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(cfg.Core.ID)))
		cfg.Core.Rand = rng.Intn
	}
	if st, ok := cfg.Store.(SnapshotStore); ok && cfg.Core.SnapshotMembership == nil {
		cfg.Core.SnapshotMembership = snapshotMembership(st)
	}
	core, err := paxos.New(cfg.Core, cfg.Store)
	if err != nil {
		return nil, err
	}
	r := &Replica{
		cfg:       cfg,
		core:      core,
		inbox:     make(chan paxos.Message, cfg.InboxSize),
		proposals: make(chan proposal, cfg.ProposalQueue),
		queries:   make(chan func(*paxos.Node), 16),
		stopped:   make(chan struct{}),
		waiters:   map[paxos.CommandID][]waiter{},
		persist:   make(chan paxos.Ready, 64),
		durable:   make(chan []paxos.Ready, 64),
		installs:  make(chan installJob, 16),
		fetching:  map[paxos.GroupID]bool{},
		recent:    recentWrite,
		yieldFor:  yieldWindow,
	}
	r.appliers = make([]*paxos.Applier, core.Groups())
	for i := range r.appliers {
		r.appliers[i] = paxos.NewApplier(cfg.MaxClients, applierResults)
	}
	r.next = make([]uint64, core.Groups())
	r.ms = make([]paxos.Membership, core.Groups())
	for i := range r.ms {
		r.ms[i] = paxos.InitialMembership(cfg.Core.Nodes)
	}
	r.snapAt = make([]uint64, core.Groups())
	r.saving = make([]bool, core.Groups())
	r.saved = make(chan savedSnapshot, core.Groups())
	if err := r.restoreAtStart(); err != nil {
		return nil, err
	}
	return r, nil
}

// Deliver hands a message from a peer to the replica. It never blocks: when
// the inbox is full the message is dropped (Paxos retries) and Deliver
// returns false.
func (r *Replica) Deliver(m paxos.Message) bool {
	select {
	case r.inbox <- m:
		return true
	default:
		return false
	}
}

// Propose proposes cmd in group g and waits until it is chosen and applied
// (Result), until this node knows it will not propose it (a
// *paxos.NotMasterError with a hint, or paxos.ErrOverloaded), or until ctx
// ends (ErrOutcomeUnknown). It never reports success for a command that did
// not take effect (field report F6).
func (r *Replica) Propose(ctx context.Context, g paxos.GroupID, cmd paxos.Command) (Result, error) {
	return r.propose(ctx, proposal{group: g, cmd: cmd, enter: (*paxos.Node).Propose})
}

// ProposeAhead is Propose for a command that should not wait behind the
// group's queue (paxos.Node.ProposeAhead): on the master it goes into a
// new slot at once, ahead of the commands proposed with Propose. The caller
// decides which commands deserve it, e.g. those of a client with little in
// flight while another floods the group.
func (r *Replica) ProposeAhead(ctx context.Context, g paxos.GroupID, cmd paxos.Command) (Result, error) {
	return r.propose(ctx, proposal{group: g, cmd: cmd, enter: (*paxos.Node).ProposeAhead})
}

// ProposeContended is ProposeAhead for a light client's command on a node
// busy with other clients' commands (paxos.Node.ProposeContended): besides
// going ahead, it makes every node that writes its slot yield the disk to
// light clients for a while (Config.YieldGap).
func (r *Replica) ProposeContended(ctx context.Context, g paxos.GroupID, cmd paxos.Command) (Result, error) {
	return r.propose(ctx, proposal{group: g, cmd: cmd, enter: (*paxos.Node).ProposeContended})
}

func (r *Replica) propose(ctx context.Context, p proposal) (Result, error) {
	p.done = make(chan outcome, 1)
	// The waiter is forgotten at the deadline, or after a minute for a
	// context without one, so that an abandoned call cannot leak.
	p.deadline = time.Now().Add(time.Minute)
	if d, ok := ctx.Deadline(); ok {
		p.deadline = d
	}
	select {
	case r.proposals <- p:
	case <-r.stopped:
		return Result{}, ErrStopped
	default:
		return Result{}, fmt.Errorf("%w: the replica's proposal queue is full", paxos.ErrOverloaded)
	}
	select {
	case o := <-p.done:
		return o.res, o.err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%w (%v)", ErrOutcomeUnknown, ctx.Err())
	case <-r.stopped:
		return Result{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped)
	}
}

// Status returns the status of group g, read on the replica's goroutine.
func (r *Replica) Status(ctx context.Context, g paxos.GroupID) (paxos.GroupStatus, error) {
	type answer struct {
		st  paxos.GroupStatus
		err error
	}
	done := make(chan answer, 1) // buffered: the loop never waits for us
	q := func(n *paxos.Node) {
		st, err := n.Status(g)
		done <- answer{st, err}
	}
	select {
	case r.queries <- q:
	case <-r.stopped:
		return paxos.GroupStatus{}, ErrStopped
	case <-ctx.Done():
		return paxos.GroupStatus{}, ctx.Err()
	}
	select {
	case a := <-done:
		return a.st, a.err
	case <-r.stopped:
		return paxos.GroupStatus{}, ErrStopped
	case <-ctx.Done():
		return paxos.GroupStatus{}, ctx.Err()
	}
}

// Campaign asks the core to run phase 1 for group g now.
func (r *Replica) Campaign(ctx context.Context, g paxos.GroupID) error {
	errc := make(chan error, 1)
	select {
	case r.queries <- func(n *paxos.Node) { errc <- n.Campaign(g) }:
	case <-r.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-errc:
		return err
	case <-r.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ProposeChange asks the core to propose membership change c in group g
// (paxos.Node.ProposeChange says what it returns). It returns once the
// change is queued, not once it is in force: watch Membership for that.
func (r *Replica) ProposeChange(ctx context.Context, g paxos.GroupID, c paxos.Change) error {
	var err error
	if qerr := r.query(ctx, func(n *paxos.Node) { err = n.ProposeChange(g, c) }); qerr != nil {
		return qerr
	}
	return err
}

// Membership returns group g's membership as the core knows it (as of the
// slots handed out to apply, with the epochs still to come into force).
func (r *Replica) Membership(ctx context.Context, g paxos.GroupID) (paxos.Membership, error) {
	var ms paxos.Membership
	var err error
	if qerr := r.query(ctx, func(n *paxos.Node) { ms, err = n.Membership(g) }); qerr != nil {
		return paxos.Membership{}, qerr
	}
	return ms, err
}

// Progress returns, for group g, the highest commit index the core heard
// from each node (paxos.Node.Progress): how far learners have caught up.
func (r *Replica) Progress(ctx context.Context, g paxos.GroupID) (map[paxos.NodeID]uint64, error) {
	var p map[paxos.NodeID]uint64
	var err error
	if qerr := r.query(ctx, func(n *paxos.Node) { p, err = n.Progress(g) }); qerr != nil {
		return nil, qerr
	}
	return p, err
}

// query runs f on the replica's goroutine and waits for it. What f writes
// may be read only once query returns nil: after an error, f may still run.
func (r *Replica) query(ctx context.Context, f func(*paxos.Node)) error {
	done := make(chan struct{})
	select {
	case r.queries <- func(n *paxos.Node) { f(n); close(done) }:
	case <-r.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-r.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when Run has returned.
func (r *Replica) Done() <-chan struct{} { return r.stopped }

// Run drives the replica until ctx ends or the store fails. A store failure
// stops the node: it can no longer keep the promises Paxos needs.
func (r *Replica) Run(ctx context.Context) error {
	defer close(r.stopped)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	perr := make(chan error, 1)
	go func() {
		err := r.persistLoop(ctx)
		if err != nil {
			cancel()
		}
		perr <- err
	}()
	r.err = r.run(ctx)
	cancel()
	r.saves.Wait() // the caller may close the store once Run returns
	if err := <-perr; err != nil {
		r.err = err
	}
	r.failWaiters()
	return r.err
}

// maxDrain bounds how much one iteration takes in before it writes, so that
// one step's latency stays bounded under load.
const maxDrain = 8192

func (r *Replica) run(ctx context.Context) error {
	ticker := time.NewTicker(r.cfg.Tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-r.inbox:
			r.step(m)
		case p := <-r.proposals:
			r.takeProposal(p)
		case q := <-r.queries:
			q(r.core)
		case now := <-ticker.C:
			r.core.Tick()
			if r.ticks++; r.ticks%100 == 0 {
				r.expireWaiters(now)
			}
		case jobs := <-r.durable:
			r.persisted(jobs)
		case j := <-r.installs:
			if err := r.install(j); err != nil {
				return err
			}
		case s := <-r.saved:
			if err := r.snapshotSaved(s); err != nil {
				return err
			}
		}
		r.drain()
		if err := r.handleReady(ctx); err != nil {
			return err
		}
	}
}

// drain takes in whatever else is already waiting, up to maxDrain items.
func (r *Replica) drain() {
	for i := 0; i < maxDrain; i++ {
		select {
		case m := <-r.inbox:
			r.step(m)
		case p := <-r.proposals:
			r.takeProposal(p)
		case jobs := <-r.durable:
			r.persisted(jobs)
		default:
			return
		}
	}
}

func (r *Replica) step(m paxos.Message) {
	if err := r.core.Step(m); err != nil {
		r.cfg.Logger.Warn("dropped a peer message", "from", m.From, "type", m.Type.String(), "err", err)
	}
}

func (r *Replica) takeProposal(p proposal) {
	if err := p.enter(r.core, p.group, p.cmd); err != nil {
		p.done <- outcome{err: err}
		return
	}
	r.waiters[p.cmd.ID] = append(r.waiters[p.cmd.ID], waiter{done: p.done, deadline: p.deadline})
}

// handleReady works off the core's output in the order paxos.Ready demands.
// Writing is left to the persister goroutine, so that this loop keeps
// stepping messages while an fsync runs; the writes that pile up meanwhile
// go into the persister's next batch, with one fsync for all of them.
func (r *Replica) handleReady(ctx context.Context) error {
	for i := 0; i < 64 && r.core.HasReady(); i++ {
		rd := r.core.Ready()
		if len(rd.Messages) > 0 {
			r.cfg.Transport.Send(rd.Messages)
		}
		for _, err := range rd.StorageErrors {
			r.cfg.Logger.Error("paxos core", "err", err)
		}
		// Chosen slots are applied, and their callers answered, before this
		// step's write: a chosen slot is durably accepted by a majority
		// already, and waiting for an unrelated fsync here would put one
		// more fsync on every command's path.
		for i := range rd.Committed {
			r.apply(&rd.Committed[i])
			if last := i == len(rd.Committed)-1 || rd.Committed[i+1].Group != rd.Committed[i].Group; last {
				if err := r.maybeSnapshot(rd.Committed[i].Group); err != nil {
					return err
				}
			}
		}
		for _, need := range rd.Snapshots {
			r.fetchSnapshot(ctx, need)
		}
		for _, d := range rd.Dropped {
			r.resolve(d.ID, outcome{err: d.Err})
		}
		select {
		case r.persist <- rd:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// persisted finishes Readys whose writes are durable: replies to this node
// are stepped, and the core may drop applied entries from memory.
func (r *Replica) persisted(jobs []paxos.Ready) {
	for _, rd := range jobs {
		r.core.Advance(rd)
		for _, m := range rd.AfterSync {
			if m.To == r.cfg.Core.ID {
				r.step(m)
			}
		}
	}
}

// persistLoop writes Readys in order. It takes every Ready that is waiting
// and writes them as one batch with one fsync (or none, when none of them
// needs it), then sends their replies, which vouch for what was written, and
// hands them back to the loop.
func (r *Replica) persistLoop(ctx context.Context) error {
	act := newActivity(len(r.appliers), r.recent)
	// lastContended is when the newest contended write came in, synced
	// when the newest synced write ended (YieldGap).
	var lastContended, synced time.Time
	var writes []paxos.GroupWrite
	var remote []paxos.Message
	for {
		var jobs []paxos.Ready
		select {
		case rd := <-r.persist:
			jobs = append(jobs, rd)
		case <-ctx.Done():
			return nil
		}
	more:
		for len(jobs) < cap(r.persist) {
			select {
			case rd := <-r.persist:
				jobs = append(jobs, rd)
			default:
				break more
			}
		}
		now := time.Now()
		switch {
		case !needsSync(jobs) || anyUrgent(jobs):
			// Nothing to sync, or a light identity's accept (a contended
			// one is urgent too): written at once.
		case r.cfg.YieldGap > 0 && now.Sub(lastContended) < r.yieldFor && now.Before(synced.Add(r.cfg.YieldGap)):
			// A light identity competes with heavy ones: leave the disk
			// idle until the gap has passed, so that the light one's next
			// write finds no fsync in progress (here, and on a disk shared
			// with other nodes). Its write ends the wait and takes this
			// batch along.
			r.yields.Add(1)
			if r.yielding != nil {
				r.yielding()
			}
			jobs = r.gather(ctx, jobs, synced.Add(r.cfg.YieldGap).Sub(now), func(*paxos.Ready) bool { return false })
		case r.cfg.GroupCommitWait > 0 && act.missing(jobs, now) > 0:
			// Groups that wrote a moment ago have not written yet: their
			// next write is likely on its way (another master's accept,
			// this node's own next slot). Wait for them, up to the wait,
			// so that one fsync covers them all. An urgent accept (a
			// light identity's command, paxos.Message.Urgent) never
			// waits, and ends a wait it joins: the wait is there to spare
			// the disk under load, which is what a flood brings, and a
			// light identity should not pay for it.
			if r.waiting != nil {
				r.waiting()
			}
			jobs = r.gather(ctx, jobs, r.cfg.GroupCommitWait, func(rd *paxos.Ready) bool { return act.add(rd) == 0 })
		}
		now = time.Now()
		if anyContended(jobs) {
			lastContended = now
		}
		act.record(jobs, now)
		writes, remote = writes[:0], remote[:0]
		mustSync := false
		for _, rd := range jobs {
			writes = append(writes, rd.Persist...)
			mustSync = mustSync || rd.MustSync
			for _, m := range rd.AfterSync {
				if m.To != r.cfg.Core.ID {
					remote = append(remote, m)
				}
			}
		}
		if len(writes) > 0 {
			var err error
			if u, ok := r.cfg.Store.(UnsyncedSaver); ok && !mustSync {
				err = u.SaveUnsynced(writes)
			} else {
				// Durability point: nothing in AfterSync may leave before this.
				err = r.cfg.Store.Save(writes)
			}
			err = r.retryWhileFull(ctx, err, func() error { return r.cfg.Store.Save(writes) })
			if err != nil {
				return fmt.Errorf("replica: persist paxos state: %w", err)
			}
			if mustSync {
				synced = time.Now()
			}
		}
		if len(remote) > 0 {
			r.cfg.Transport.Send(remote)
			remote = nil // the transport keeps the slice
		}
		select {
		case r.durable <- jobs:
		case <-ctx.Done():
			return nil
		}
	}
}

// gather adds the Readys that arrive within d to jobs, and returns early
// when enough is enough: an urgent Ready arrives (a light identity's write
// waits for no one), done says so of a new Ready, the batch is full, or ctx
// ends (the caller finds out on its next receive).
func (r *Replica) gather(ctx context.Context, jobs []paxos.Ready, d time.Duration, done func(*paxos.Ready) bool) []paxos.Ready {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(jobs) < cap(r.persist) {
		select {
		case rd := <-r.persist:
			jobs = append(jobs, rd)
			if done(&jobs[len(jobs)-1]) || rd.Urgent {
				return jobs
			}
		case <-timer.C:
			return jobs
		case <-ctx.Done():
			return jobs
		}
	}
	return jobs
}

// applierResults bounds the outcomes remembered per client (paxos.Applier).
const applierResults = 1024

func (r *Replica) apply(a *paxos.Apply) {
	r.next[a.Group] = a.Slot + 1
	r.ms[a.Group].Apply(a.Slot, &a.Value)
	r.ms[a.Group].Prune(a.Slot + 1)
	r.appliers[a.Group].Apply(a.Slot, &a.Value, func(slot uint64, index int, cmd *paxos.Command) []byte {
		return r.cfg.StateMachine.Apply(a.Group, slot, index, cmd)
	}, func(cmd *paxos.Command, o paxos.Outcome) {
		if _, ok := r.waiters[cmd.ID]; !ok {
			return
		}
		if o.Forgotten {
			r.resolve(cmd.ID, outcome{err: fmt.Errorf("%w: command %v", ErrForgotten, cmd.ID)})
			return
		}
		r.resolve(cmd.ID, outcome{res: Result{Group: a.Group, Slot: o.Slot, Index: o.Index, Value: o.Result, Duplicate: o.Duplicate}})
	})
}

func (r *Replica) resolve(id paxos.CommandID, o outcome) {
	for _, w := range r.waiters[id] {
		w.done <- o
	}
	delete(r.waiters, id)
}

// expireWaiters forgets callers whose deadline passed; they have returned
// ErrOutcomeUnknown already.
func (r *Replica) expireWaiters(now time.Time) {
	for id, ws := range r.waiters {
		keep := ws[:0]
		for _, w := range ws {
			if now.Before(w.deadline) {
				keep = append(keep, w)
			}
		}
		if len(keep) == 0 {
			delete(r.waiters, id)
		} else {
			r.waiters[id] = keep
		}
	}
}

func (r *Replica) failWaiters() {
	for id := range r.waiters {
		r.resolve(id, outcome{err: fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped)})
	}
}

// recentWrite is how long ago a group's synced write counts as recent for
// the adaptive group-commit wait: a little more than one commit round under
// load.
const recentWrite = 2 * time.Millisecond

// yieldWindow is how long after a contended write the persister yields the
// disk (Config.YieldGap): as long as the server's fair queue keeps a heavy
// identity's pipeline short after a light one's command (contendedFor).
const yieldWindow = time.Second

// DefaultYieldGap is the YieldGap a lockd node uses. Measured with
// BenchmarkFloodIsolation (3 nodes on one disk, docs/benchmarks.md 8.6).
const DefaultYieldGap = 3 * time.Millisecond

// anyUrgent reports whether a job holds an urgent accept (paxos.Ready.Urgent):
// a light identity's command, which the group-commit wait must not delay.
func anyUrgent(jobs []paxos.Ready) bool {
	for i := range jobs {
		if jobs[i].Urgent {
			return true
		}
	}
	return false
}

// anyContended reports whether a job holds a contended accept
// (paxos.Ready.Contended), which starts or extends the time the persister
// yields the disk (Config.YieldGap).
func anyContended(jobs []paxos.Ready) bool {
	for i := range jobs {
		if jobs[i].Contended {
			return true
		}
	}
	return false
}

func needsSync(jobs []paxos.Ready) bool {
	for i := range jobs {
		if jobs[i].MustSync {
			return true
		}
	}
	return false
}

// activity remembers when each group last had a synced write, so that the
// persister waits only for groups that are busy. A node serving one group,
// or groups that take turns, never waits: its groups are all in the batch
// or idle.
type activity struct {
	window time.Duration
	last   []time.Time // per group: its last synced write
	// The batch being gathered: the groups in it, the recent groups
	// (wrote within the window when it began), and how many recent
	// groups it still lacks.
	in, recent []bool
	lacking    int
}

func newActivity(groups int, window time.Duration) *activity {
	return &activity{window: window, last: make([]time.Time, groups), in: make([]bool, groups), recent: make([]bool, groups)}
}

// missing begins a batch with jobs at now and counts the groups that wrote
// within the window but have nothing in it.
func (a *activity) missing(jobs []paxos.Ready, now time.Time) int {
	clear(a.in)
	a.lacking = 0
	for g, t := range a.last {
		a.recent[g] = !t.IsZero() && now.Sub(t) < a.window
		if a.recent[g] {
			a.lacking++
		}
	}
	for i := range jobs {
		a.add(&jobs[i])
	}
	return a.lacking
}

// add puts one more Ready into the batch begun by missing and returns how
// many recent groups the batch still lacks. It costs only rd's writes, so
// the wait for the other groups stays cheap however many Readys arrive.
func (a *activity) add(rd *paxos.Ready) int {
	for _, w := range rd.Persist {
		if g := int(w.Group); g < len(a.in) && !a.in[g] {
			a.in[g] = true
			if a.recent[g] {
				a.lacking--
			}
		}
	}
	return a.lacking
}

// record notes the groups of the synced writes in jobs.
func (a *activity) record(jobs []paxos.Ready, now time.Time) {
	for i := range jobs {
		if !jobs[i].MustSync {
			continue
		}
		for _, w := range jobs[i].Persist {
			if int(w.Group) < len(a.last) {
				a.last[w.Group] = now
			}
		}
	}
}
