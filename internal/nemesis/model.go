package nemesis

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Infinity is the return time of an operation whose outcome is unknown (it
// timed out): it may take effect at any later time.
const Infinity = int64(math.MaxInt64)

// Operation kinds of the fenced-lock model. Client operations come from the
// worker clients; Ev* operations come from the cluster's own watch stream.
const (
	OpAcquire  = "acquire"  // Output: Res ok with Token, or unknown
	OpTryFail  = "tryfail"  // a TryAcquire answered "held"
	OpRelease  = "release"  // Res ok, lost or unknown
	OpRenew    = "renew"    // Res ok
	OpValidate = "validate" // Res true or false
	EvGrant    = "ev-grant"
	EvRelease  = "ev-release"
	EvExpire   = "ev-expire"
	EvSync     = "ev-sync" // Input.Holders is the lock's state after a gap
)

// Holder is one grant of a lock: a session (its ID in the lock's group) and
// the fencing token.
type Holder struct {
	Sid    uint64 `json:"sid"`
	Token  uint64 `json:"token"`
	Shared bool   `json:"shared,omitempty"`
}

// Input is an operation on one lock name.
type Input struct {
	Kind    string
	Name    string
	Sid     uint64
	Token   uint64
	Shared  bool
	Holders []Holder // EvSync
}

// Output is what the operation returned.
type Output struct {
	Res   string // ok, held, lost, unknown, true, false
	Token uint64
}

// lockState is the model's state of one lock name.
type lockState struct {
	holders []Holder // sorted by Sid
	last    uint64   // the largest token granted so far
	dead    []uint64 // sessions whose expiry the stream reported, sorted
}

func (s lockState) holding(sid, token uint64) int {
	for i, h := range s.holders {
		if h.Sid == sid && h.Token == token {
			return i
		}
	}
	return -1
}

func (s lockState) hasSid(sid uint64) bool {
	for _, h := range s.holders {
		if h.Sid == sid {
			return true
		}
	}
	return false
}

func (s lockState) exclusive() bool {
	for _, h := range s.holders {
		if !h.Shared {
			return true
		}
	}
	return false
}

func (s lockState) isDead(sid uint64) bool {
	_, ok := slices.BinarySearch(s.dead, sid)
	return ok
}

// grant adds a grant if the model allows it: the session is not expired,
// holds no other grant of the name, the lock is free (or shared with a
// shared request), and the token is larger than every earlier one.
func (s lockState) grant(sid, token uint64, shared bool) (bool, lockState) {
	if s.holding(sid, token) >= 0 {
		return true, s // the other record of the same grant came first
	}
	if s.isDead(sid) || s.hasSid(sid) || token <= s.last {
		return false, s
	}
	if len(s.holders) > 0 && (!shared || s.exclusive()) {
		return false, s
	}
	n := s
	n.holders = append(slices.Clone(s.holders), Holder{Sid: sid, Token: token, Shared: shared})
	slices.SortFunc(n.holders, func(a, b Holder) int { return cmpU(a.Sid, b.Sid) })
	n.last = token
	return true, n
}

func (s lockState) remove(i int) lockState {
	n := s
	n.holders = slices.Delete(slices.Clone(s.holders), i, i+1)
	return n
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// step is the sequential specification of a fenced lock with sessions.
func step(st lockState, in Input, out Output) (bool, lockState) {
	switch in.Kind {
	case OpAcquire:
		if out.Res != "ok" {
			return true, st // unknown: its effect, if any, shows as an EvGrant
		}
		return st.grant(in.Sid, out.Token, in.Shared)
	case EvGrant:
		return st.grant(in.Sid, in.Token, in.Shared)
	case OpTryFail:
		// Held by another session (a shared request also fails behind a
		// queued exclusive waiter, which the model does not track).
		for _, h := range st.holders {
			if h.Sid != in.Sid {
				return true, st
			}
		}
		return false, st
	case OpRelease:
		i := st.holding(in.Sid, in.Token)
		switch out.Res {
		case "ok": // only the holder's session releases
			if i < 0 {
				return false, st
			}
			return true, st.remove(i)
		case "lost":
			return i < 0, st
		}
		return true, st
	case OpRenew:
		return st.holding(in.Sid, in.Token) >= 0, st
	case OpValidate:
		held := false
		for _, h := range st.holders {
			if h.Token == in.Token {
				held = true
			}
		}
		return held == (out.Res == "true"), st
	case EvRelease, EvExpire:
		n := st
		if i := st.holding(in.Sid, in.Token); i >= 0 {
			n = st.remove(i)
		}
		if in.Kind == EvExpire && !n.isDead(in.Sid) {
			d := append(slices.Clone(n.dead), in.Sid)
			slices.Sort(d)
			n.dead = d
		}
		return true, n
	case EvSync:
		n := st
		n.holders = slices.Clone(in.Holders)
		slices.SortFunc(n.holders, func(a, b Holder) int { return cmpU(a.Sid, b.Sid) })
		for _, h := range in.Holders {
			n.last = max(n.last, h.Token)
		}
		return true, n
	}
	return false, st
}

func stateEqual(a, b lockState) bool {
	return a.last == b.last && slices.Equal(a.holders, b.holders) && slices.Equal(a.dead, b.dead)
}

// LockModel is the porcupine model of a fenced lock with sessions,
// partitioned by lock name.
func LockModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			var names []string
			for _, op := range h {
				n := op.Input.(Input).Name
				if _, ok := by[n]; !ok {
					names = append(names, n)
				}
				by[n] = append(by[n], op)
			}
			slices.Sort(names)
			var out [][]porcupine.Operation
			for _, n := range names {
				out = append(out, by[n])
			}
			return out
		},
		Init: func() any { return lockState{} },
		Step: func(state, input, output any) (bool, any) {
			return step(state.(lockState), input.(Input), output.(Output))
		},
		Equal: func(a, b any) bool { return stateEqual(a.(lockState), b.(lockState)) },
		Hash: func(s any) uint64 {
			st := s.(lockState)
			h := st.last*31 + uint64(len(st.dead))
			for _, x := range st.holders {
				h = h*1000003 ^ x.Sid ^ x.Token<<20
			}
			return h
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(Input), output.(Output)
			switch in.Kind {
			case OpAcquire:
				return fmt.Sprintf("acquire(%s, s%d, shared=%v) -> %s %d", in.Name, in.Sid, in.Shared, out.Res, out.Token)
			case EvSync:
				return fmt.Sprintf("sync(%s) %v", in.Name, in.Holders)
			}
			return fmt.Sprintf("%s(%s, s%d, t%d) -> %s", in.Kind, in.Name, in.Sid, in.Token, out.Res)
		},
		DescribeState: func(s any) string {
			st := s.(lockState)
			var b strings.Builder
			fmt.Fprintf(&b, "holders=%v last=%d dead=%v", st.holders, st.last, st.dead)
			return b.String()
		},
	}
}
