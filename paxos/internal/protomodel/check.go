package protomodel

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"strings"
	"time"
)

// DefaultMaxStates is the state cap when Config.MaxStates is zero.
const DefaultMaxStates = 20_000_000

// Result is the outcome of one exhaustive check.
type Result struct {
	Config Config
	// States is the number of distinct states reached, Transitions the
	// number of transitions taken (including those to states seen before).
	States, Transitions int
	// Depth is the length of the longest shortest path explored.
	Depth int
	// Complete reports that the whole bounded state space was explored:
	// no violation and the state cap was not hit.
	Complete bool
	Elapsed  time.Duration
	// Violation is the first invariant broken, with a shortest trace to it,
	// or nil.
	Violation *Violation
}

func (r *Result) String() string {
	status := "complete, no violation"
	switch {
	case r.Violation != nil:
		status = fmt.Sprintf("VIOLATION of %s after %d steps", r.Violation.Invariant, len(r.Violation.Trace))
	case !r.Complete:
		status = "state cap hit, incomplete"
	}
	return fmt.Sprintf("%v: %d states, %d transitions, depth %d, %.2fs: %s",
		&r.Config, r.States, r.Transitions, r.Depth, r.Elapsed.Seconds(), status)
}

// Violation is a broken invariant and a shortest trace that leads to it.
type Violation struct {
	// Invariant names the invariant: "commit", "agreement", "chosen",
	// "consensus" or "commit-prefix".
	Invariant string
	Detail    string
	Trace     []Step
}

// Step is one transition of a trace and the state after it.
type Step struct {
	Action string
	State  string
}

// String prints the trace one numbered step a line, each followed by the
// state it leads to.
func (v *Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invariant %q broken: %s\n", v.Invariant, v.Detail)
	for k, s := range v.Trace {
		fmt.Fprintf(&b, "%3d. %s\n       %s\n", k+1, s.Action, s.State)
	}
	return b.String()
}

// Check explores every state reachable in the bounded configuration, breadth
// first, and checks every invariant in every state. It stops at the first
// violation, which therefore comes with a shortest trace, or when
// Config.MaxStates distinct states have been seen.
func Check(cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Owners = append([]int(nil), cfg.Owners...)
	c := &cfg
	limit := c.MaxStates
	if limit <= 0 {
		limit = DefaultMaxStates
	}
	start := time.Now()
	res := &Result{Config: cfg}
	x := newExplorer(c)
	var init State
	x.add(&init, -1)
	type item struct {
		st  State
		idx int32
	}
	frontier := []item{{init, 0}}
	var bad int32 = -1
	var why [2]string
	for depth := 0; len(frontier) > 0 && bad < 0; depth++ {
		res.Depth = depth
		var next []item
		for k := range frontier {
			if bad >= 0 || len(x.parents) >= limit {
				break
			}
			parent := frontier[k].idx
			t := &x.scratch
			c.successors(&frontier[k].st, t, func(Action) {
				if bad >= 0 {
					return
				}
				res.Transitions++
				idx, fresh := x.add(t, parent)
				if !fresh {
					return
				}
				if name, detail := c.invariants(t); name != "" {
					bad, why = idx, [2]string{name, detail}
					return
				}
				next = append(next, item{*t, idx})
			})
			frontier[k] = item{} // let the state go
		}
		frontier = next
		if len(x.parents) >= limit {
			break
		}
	}
	res.States = len(x.parents)
	res.Complete = bad < 0 && len(frontier) == 0
	if bad >= 0 {
		res.Violation = &Violation{Invariant: why[0], Detail: why[1], Trace: x.trace(bad)}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// explorer holds the visited set: a 128-bit hash of each state's encoding and
// the index of the state it was first reached from.
type explorer struct {
	c       *Config
	seeds   [2]maphash.Seed
	visited map[[2]uint64]int32
	parents []int32
	buf     []byte
	scratch State
	canon   State
	sym     *symmetry // nil without symmetry reduction
}

func newExplorer(c *Config) *explorer {
	x := &explorer{c: c, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, visited: map[[2]uint64]int32{}}
	if !c.NoSymmetry {
		x.sym = newSymmetry(c)
	}
	return x
}

func (x *explorer) key(st *State) [2]uint64 {
	if x.sym != nil {
		st = x.sym.canonical(x.c, st, &x.canon)
	}
	x.buf = x.c.encode(x.buf[:0], st)
	return [2]uint64{maphash.Bytes(x.seeds[0], x.buf), maphash.Bytes(x.seeds[1], x.buf)}
}

// add records st, first reached from parent, and reports its index and
// whether it is new.
func (x *explorer) add(st *State, parent int32) (int32, bool) {
	k := x.key(st)
	if idx, ok := x.visited[k]; ok {
		return idx, false
	}
	idx := int32(len(x.parents))
	x.visited[k] = idx
	x.parents = append(x.parents, parent)
	return idx, true
}

// trace replays the path from the initial state to state idx, finding at each
// step the transition whose target has the next index on the path.
func (x *explorer) trace(idx int32) []Step {
	var path []int32
	for i := idx; i > 0; i = x.parents[i] {
		path = append(path, i)
	}
	var st State
	var steps []Step
	for k := len(path) - 1; k >= 0; k-- {
		want := path[k]
		var found bool
		var nst State
		var desc string
		var t State
		x.c.successors(&st, &t, func(a Action) {
			if found || x.visited[x.key(&t)] != want {
				return
			}
			found, nst, desc = true, t, x.c.describeAction(&a, &st, &t)
		})
		if !found {
			steps = append(steps, Step{Action: "(trace lost: no transition reaches the next state)"})
			break
		}
		steps = append(steps, Step{Action: desc, State: x.c.describe(&nst)})
		st = nst
	}
	return steps
}

// truth returns, for slot s, the set of values (bit v) that are chosen in
// the Paxos sense: a majority of acceptors voted for them under one ballot.
func (c *Config) truth(st *State, s int) uint32 {
	var set uint32
	for b := 1; b <= len(c.Owners); b++ {
		v := st.props[b-1].Val[s]
		if v == 0 {
			continue
		}
		n := 0
		for a := 0; a < c.Nodes; a++ {
			if st.votes&c.voteBit(a, b, s) != 0 {
				n++
			}
		}
		if n >= c.quorum() {
			set |= 1 << v
		}
	}
	return set
}

// invariants checks st and returns the name and a description of the first
// broken invariant, or "".
func (c *Config) invariants(st *State) (string, string) {
	if !c.SkipCommitInvariant {
		// The local invariant of the fix: a Commit(b, cm) covers only slots
		// whose chosen value, as the sender knows it, is what b proposed.
		// Chosen marks below the commit index never change, so checking
		// the sender's marks now is checking them when it sent.
		for b := 1; b <= len(c.Owners); b++ {
			i := c.Owners[b-1]
			for cm := 1; cm <= c.Slots; cm++ {
				if st.commits&c.commitBit(b, cm) == 0 {
					continue
				}
				for s := 0; s < cm; s++ {
					pv, e := st.props[b-1].Val[s], st.nodes[i].Log[s]
					if pv != 0 && e.V != pv {
						return "commit", fmt.Sprintf("%s sent Commit(%s, %d) but slot %d chose %s while %s proposed %s there",
							nodeName(i), c.ballotName(uint8(b)), cm, s, c.valueName(e.V), c.ballotName(uint8(b)), c.valueName(pv))
					}
				}
			}
		}
	}
	for s := 0; s < c.Slots; s++ {
		marked, who := uint8(0), -1
		for i := 0; i < c.Nodes; i++ {
			e := st.nodes[i].Log[s]
			if !e.Chosen {
				continue
			}
			if marked != 0 && e.V != marked {
				return "agreement", fmt.Sprintf("slot %d: %s takes %s as chosen, %s takes %s",
					s, nodeName(who), c.valueName(marked), nodeName(i), c.valueName(e.V))
			}
			marked, who = e.V, i
		}
		truth := c.truth(st, s)
		if marked != 0 && truth&(1<<marked) == 0 {
			return "chosen", fmt.Sprintf("slot %d: %s takes %s as chosen, but no majority voted for it under one ballot",
				s, nodeName(who), c.valueName(marked))
		}
		if bits.OnesCount32(truth) > 1 {
			return "consensus", fmt.Sprintf("slot %d: votes of majorities choose more than one value (set %#x)", s, truth)
		}
	}
	for i := 0; i < c.Nodes; i++ {
		n := &st.nodes[i]
		for s := 0; s < int(n.Commit); s++ {
			if !n.Log[s].Chosen {
				return "commit-prefix", fmt.Sprintf("%s has commit %d but slot %d is not marked chosen", nodeName(i), n.Commit, s)
			}
		}
	}
	return "", ""
}
