package nemesis

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Rec is one record a worker client writes (a JSON line on its stdout).
type Rec struct {
	T      string `json:"t"` // op, write, held, final, probe, watch, lost, log
	W      int    `json:"w"`
	Op     string `json:"op,omitempty"` // acquire, try, shared, tryshared, release, renew, validate
	Name   string `json:"name,omitempty"`
	Sid    uint64 `json:"sid,omitempty"`
	Token  uint64 `json:"token,omitempty"`
	Shared bool   `json:"shared,omitempty"`
	Res    string `json:"res,omitempty"` // ok, held, lost, unknown, true, false
	Call   int64  `json:"call,omitempty"`
	Ret    int64  `json:"ret,omitempty"` // Infinity when the outcome is unknown
	// LostBefore: the lock's Lost (for acquire: the session's Done) had
	// closed before the call was made.
	LostBefore bool     `json:"lost_before,omitempty"`
	Stale      bool     `json:"stale,omitempty"` // a write with a lock the worker no longer holds
	Toks       []uint64 `json:"toks,omitempty"`  // watch: granted tokens in stream order
	Dur        int64    `json:"dur,omitempty"`
	Err        string   `json:"err,omitempty"`
}

// Event is one event of the cluster's watch stream of a lock, as the
// harness's watcher received it.
type Event struct {
	Name    string   `json:"name"`
	Kind    string   `json:"kind"` // granted, released, expired, sync
	Sid     uint64   `json:"sid,omitempty"`
	Token   uint64   `json:"token,omitempty"`
	Shared  bool     `json:"shared,omitempty"`
	Holders []Holder `json:"holders,omitempty"`
	At      int64    `json:"at"` // when the watcher received it
	Start   int64    `json:"start,omitempty"`
}

// Write is one write the fenced resource received.
type Write struct {
	Name     string
	Token    uint64
	Shared   bool
	Stale    bool
	W        int
	Cts      int64 // client timestamp, taken before it checked that it holds the lock
	Rts      int64 // when the resource received it
	Accepted bool
}

// Resource is a fenced resource: it accepts a write for a name only with a
// token at least as large as the last one it accepted, and logs every write.
type Resource struct {
	// AcceptLower is a planted fault for the checker tests: accept every
	// write.
	AcceptLower bool

	mu   sync.Mutex
	last map[string]uint64
	log  []Write
}

// Write offers w and reports whether it was accepted.
func (r *Resource) Write(w Write) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]uint64{}
	}
	w.Rts = time.Now().UnixNano()
	w.Accepted = r.AcceptLower || w.Token >= r.last[w.Name]
	if w.Accepted {
		r.last[w.Name] = max(r.last[w.Name], w.Token)
	}
	r.log = append(r.log, w)
	return w.Accepted
}

// Log returns the writes in the order the resource received them.
func (r *Resource) Log() []Write {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// CheckMutex is checker 1. From the resource's log: between the first and
// the last accepted write of a token, the resource accepted no write of
// another token when either is exclusive. From client timestamps: the spans
// [first, last client timestamp] of the accepted writes of two tokens do not
// overlap when either is exclusive. Writes for which trusted returns false
// (stale writes, and writes of a worker that was paused while it held the
// lock, whose belief may be stale by design) are left out of the second
// check: fencing, which the first check judges, is what protects them.
func CheckMutex(log []Write, trusted func(Write) bool) []string {
	var bad []string
	byName := map[string][]Write{}
	for _, w := range log {
		if w.Accepted {
			byName[w.Name] = append(byName[w.Name], w)
		}
	}
	names := sortedKeys(byName)
	for _, name := range names {
		ws := byName[name]
		first, last := map[uint64]int{}, map[uint64]int{}
		shared := map[uint64]bool{}
		for i, w := range ws {
			if _, ok := first[w.Token]; !ok {
				first[w.Token] = i
			}
			last[w.Token] = i
			shared[w.Token] = w.Shared
		}
		for t, i := range first {
			for k := i + 1; k < last[t]; k++ {
				u := ws[k].Token
				if u != t && (!shared[t] || !shared[u]) {
					bad = append(bad, fmt.Sprintf("mutual exclusion: %s: the resource accepted token %d (worker %d) between writes of token %d (worker %d, shared=%v)",
						name, u, ws[k].W, t, ws[i].W, shared[t]))
					break
				}
			}
		}
		type span struct {
			lo, hi int64
			shared bool
			w      int
		}
		spans := map[uint64]*span{}
		for _, w := range ws {
			if trusted != nil && !trusted(w) {
				continue
			}
			s := spans[w.Token]
			if s == nil {
				spans[w.Token] = &span{lo: w.Cts, hi: w.Cts, shared: w.Shared, w: w.W}
				continue
			}
			s.lo, s.hi = min(s.lo, w.Cts), max(s.hi, w.Cts)
		}
		toks := sortedKeys(spans)
		for i, t := range toks {
			for _, u := range toks[i+1:] {
				a, b := spans[t], spans[u]
				if a.shared && b.shared {
					continue
				}
				if a.lo <= b.hi && b.lo <= a.hi {
					bad = append(bad, fmt.Sprintf("mutual exclusion: %s: token %d (worker %d) wrote over [%s, %s] and token %d (worker %d) over [%s, %s]: the holders overlap in time",
						name, t, a.w, ts(a.lo), ts(a.hi), u, b.w, ts(b.lo), ts(b.hi)))
				}
			}
		}
	}
	return bad
}

func ts(n int64) string { return time.Unix(0, n).Format("15:04:05.000000") }

func sortedKeys[K string | uint64, V any](m map[K]V) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// CheckTokens is checker 2: per name, the watch stream reports grants with
// strictly increasing tokens; an acquire that returned before another was
// called got the smaller token; no two grants share a token; and every
// worker's own watch saw increasing tokens.
func CheckTokens(ops []Rec, events []Event) []string {
	var bad []string
	lastGrant := map[string]Event{}
	tokenOwner := map[string]map[uint64]uint64{} // name -> token -> sid
	own := func(name string, token, sid uint64, what string) {
		m := tokenOwner[name]
		if m == nil {
			m = map[uint64]uint64{}
			tokenOwner[name] = m
		}
		if s, ok := m[token]; ok && s != sid {
			bad = append(bad, fmt.Sprintf("tokens: %s: token %d granted to session %d and (%s) to session %d", name, token, s, what, sid))
		}
		m[token] = sid
	}
	for _, e := range events {
		if e.Kind != "granted" {
			continue
		}
		if p, ok := lastGrant[e.Name]; ok && (e.Token < p.Token || e.Token == p.Token && e.Sid != p.Sid) {
			bad = append(bad, fmt.Sprintf("tokens: %s: the watch stream granted token %d (session %d) after token %d (session %d)", e.Name, e.Token, e.Sid, p.Token, p.Sid))
		}
		lastGrant[e.Name] = e
		own(e.Name, e.Token, e.Sid, "watch")
	}
	byName := map[string][]Rec{}
	for _, r := range ops {
		if r.T == "op" && isAcquire(r.Op) && r.Res == "ok" {
			byName[r.Name] = append(byName[r.Name], r)
			own(r.Name, r.Token, r.Sid, "acquire")
		}
		if r.T == "watch" {
			for i := 1; i < len(r.Toks); i++ {
				if r.Toks[i] <= r.Toks[i-1] {
					bad = append(bad, fmt.Sprintf("tokens: %s: worker %d's watch saw token %d after %d", r.Name, r.W, r.Toks[i], r.Toks[i-1]))
				}
			}
		}
	}
	for _, name := range sortedKeys(byName) {
		as := byName[name]
		slices.SortFunc(as, func(a, b Rec) int { return cmpI(a.Ret, b.Ret) })
		for i, a := range as {
			for _, b := range as[i+1:] {
				if a.Ret < b.Call && a.Token >= b.Token {
					bad = append(bad, fmt.Sprintf("tokens: %s: worker %d's acquire returned token %d at %s, before worker %d's acquire (called %s) returned the smaller token %d",
						name, a.W, a.Token, ts(a.Ret), b.W, ts(b.Call), b.Token))
				}
			}
		}
	}
	return bad
}

func cmpI(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func isAcquire(op string) bool {
	return op == "acquire" || op == "try" || op == "shared" || op == "tryshared"
}

// keepUnknown keeps operations whose outcome is unknown (they timed out) in
// the history, with their return at Infinity. The model gives them no
// effect of their own (whatever they did shows in the watch stream as a
// grant or release, whose interval starts at the earliest acquire call of
// its session), so they cannot make a history fail; but every one of them
// doubles the states porcupine explores. So they are left out.
const keepUnknown = false

// BuildHistory turns the workers' operations and the watch stream into a
// porcupine history. A watch event returns when the watcher received it. Its
// call is a time it certainly happened after: the stream is in apply order,
// so after the previous event's call; a grant after the earliest call of an
// acquire of its session and name that may have made it: one that returned
// its token, or one whose outcome is unknown (a timed-out acquire whose wait
// the client could not cancel stays queued until its session ends, and may
// be granted long after; a later acquire of the same session then returns
// the token it already holds, so the acquire that returned a token need not
// be the one that made the grant); a release after the call of the Release
// of its token.
func BuildHistory(ops []Rec, events []Event) []porcupine.Operation {
	var h []porcupine.Operation
	acqCall := map[string]int64{}      // name/token -> call of the acquire that returned it
	relCall := map[string]int64{}      // name/sid/token -> call of its Release
	unknownAcq := map[string][]int64{} // name/sid -> calls of acquires whose outcome is unknown
	for _, r := range ops {
		if r.T != "op" {
			continue
		}
		in := Input{Name: r.Name, Sid: r.Sid, Token: r.Token, Shared: r.Shared}
		out := Output{Res: r.Res, Token: r.Token}
		ret := r.Ret
		if r.Res == "unknown" {
			ret = Infinity
		}
		switch {
		case isAcquire(r.Op):
			switch r.Res {
			case "ok":
				k := fmt.Sprintf("%s/%d", r.Name, r.Token)
				if c, ok := acqCall[k]; !ok || r.Call < c {
					acqCall[k] = r.Call // a session re-acquiring returns its token again
				}
			case "held":
			default:
				k := fmt.Sprintf("%s/%d", r.Name, r.Sid)
				unknownAcq[k] = append(unknownAcq[k], r.Call)
			}
			in.Kind = OpAcquire
			in.Token = 0
			if r.Res == "held" {
				in.Kind = OpTryFail
			} else if r.Res != "ok" && !keepUnknown {
				continue
			}
		case r.Op == "release":
			relCall[fmt.Sprintf("%s/%d/%d", r.Name, r.Sid, r.Token)] = r.Call
			if r.Res == "unknown" && !keepUnknown {
				continue
			}
			in.Kind = OpRelease
		case r.Op == "renew":
			if r.Res != "ok" {
				continue
			}
			in.Kind = OpRenew
		case r.Op == "validate":
			if r.Res != "true" && r.Res != "false" {
				continue
			}
			in.Kind = OpValidate
		default:
			continue
		}
		h = append(h, porcupine.Operation{ClientId: r.W, Input: in, Call: r.Call, Output: out, Return: ret})
	}
	for _, calls := range unknownAcq {
		slices.Sort(calls)
	}
	lb := map[string]int64{}
	for _, e := range events {
		b := lb[e.Name]
		if e.Start != 0 {
			b = max(b, e.Start)
		}
		switch e.Kind {
		case "granted":
			c, ok := acqCall[fmt.Sprintf("%s/%d", e.Name, e.Token)]
			if calls := unknownAcq[fmt.Sprintf("%s/%d", e.Name, e.Sid)]; len(calls) > 0 && calls[0] <= e.At && (!ok || calls[0] < c) {
				c, ok = calls[0], true
			}
			if ok {
				b = max(b, c)
			}
		case "released", "expired":
			if c, ok := acqCall[fmt.Sprintf("%s/%d", e.Name, e.Token)]; ok {
				b = max(b, c)
			}
			if c, ok := relCall[fmt.Sprintf("%s/%d/%d", e.Name, e.Sid, e.Token)]; ok && e.Kind == "released" {
				b = max(b, c)
			}
		}
		b = min(b, e.At)
		lb[e.Name] = b
		in := Input{Name: e.Name, Sid: e.Sid, Token: e.Token, Shared: e.Shared}
		switch e.Kind {
		case "granted":
			in.Kind = EvGrant
		case "released":
			in.Kind = EvRelease
		case "expired":
			in.Kind = EvExpire
		case "sync":
			in.Kind = EvSync
			in.Holders = e.Holders
		default:
			continue
		}
		h = append(h, porcupine.Operation{ClientId: 0, Input: in, Call: b, Output: Output{Res: "ok"}, Return: e.At})
	}
	return h
}

// CheckLinearizable is checker 3. On a failure it writes porcupine's
// visualization into dir and returns its path. A check that times out is
// reported as unknown, not as a violation.
func CheckLinearizable(h []porcupine.Operation, dir string, timeout time.Duration) (bad []string, vis string, unknown bool) {
	model := LockModel()
	res, info := porcupine.CheckOperationsVerbose(model, h, timeout)
	switch res {
	case porcupine.Ok:
		return nil, "", false
	case porcupine.Unknown:
		return nil, "", true
	}
	vis = filepath.Join(dir, "linearizability.html")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		if err := porcupine.VisualizePath(model, info, vis); err != nil {
			vis = "(visualization failed: " + err.Error() + ")"
		}
	}
	return []string{fmt.Sprintf("linearizability: the history of %d operations is not linearizable for the fenced-lock model; visualization: %s", len(h), vis)}, vis, false
}

// CheckKept is checker 4: every lock a worker reported holding after the
// faults healed (held), and still held at the end (final, with Res ok after
// a renew), is among the lock's holders with the same token (status, as the
// lock's master answered after the report); and a session the worker kept
// alive (its Lost never closed) was not told it was lost by the cluster.
func CheckKept(held []Rec, status map[string][]Holder, final []Rec) []string {
	var bad []string
	stillHeld := map[string]Rec{}
	for _, f := range final {
		stillHeld[fmt.Sprintf("%d/%s/%d", f.W, f.Name, f.Token)] = f
	}
	for _, h := range held {
		f, ok := stillHeld[fmt.Sprintf("%d/%s/%d", h.W, h.Name, h.Token)]
		if !ok {
			continue
		}
		if f.Res == "lost" && !f.LostBefore {
			bad = append(bad, fmt.Sprintf("kept: worker %d kept session %d alive (its Lost never closed) but the cluster said %s token %d is lost: %s", h.W, h.Sid, h.Name, h.Token, f.Err))
		}
		if f.LostBefore {
			continue // the client gave it up meanwhile; nothing to vouch for
		}
		found := false
		for _, x := range status[h.Name] {
			if x.Sid == h.Sid && x.Token == h.Token {
				found = true
			}
		}
		if !found {
			bad = append(bad, fmt.Sprintf("kept: worker %d holds %s with token %d (session %d), acknowledged and kept alive, but the master lists holders %v", h.W, h.Name, h.Token, h.Sid, status[h.Name]))
		}
	}
	return bad
}

// CheckLost is checker 6: no call told a session it holds a lock after its
// Lost (or the session's Done) closed, and no lock was granted to a
// session after the cluster reported that session expired. groupOf maps a
// name to its group, since session IDs are per group.
func CheckLost(ops []Rec, events []Event, groupOf func(string) uint32) []string {
	var bad []string
	for _, r := range ops {
		if r.T == "op" && r.Res == "ok" && r.LostBefore && (r.Op == "renew" || isAcquire(r.Op)) {
			bad = append(bad, fmt.Sprintf("lost: worker %d's %s of %s (token %d) succeeded at %s although its Lost had closed before the call", r.W, r.Op, r.Name, r.Token, ts(r.Ret)))
		}
	}
	type gs struct {
		g   uint32
		sid uint64
	}
	expired := map[gs]Event{}
	for _, e := range events {
		k := gs{groupOf(e.Name), e.Sid}
		switch e.Kind {
		case "expired":
			if _, ok := expired[k]; !ok {
				expired[k] = e
			}
		case "granted":
			if x, ok := expired[k]; ok && x.Name == e.Name {
				bad = append(bad, fmt.Sprintf("lost: %s was granted (token %d) to session %d after the stream reported that session expired (token %d)", e.Name, e.Token, e.Sid, x.Token))
			}
		}
	}
	for _, r := range ops {
		if r.T != "op" || !isAcquire(r.Op) || r.Res != "ok" {
			continue
		}
		if x, ok := expired[gs{groupOf(r.Name), r.Sid}]; ok && r.Call > x.At {
			bad = append(bad, fmt.Sprintf("lost: worker %d was granted %s (token %d) for session %d, in an acquire called at %s, after the cluster reported at %s that the session expired",
				r.W, r.Name, r.Token, r.Sid, ts(r.Call), ts(x.At)))
		}
	}
	return bad
}
