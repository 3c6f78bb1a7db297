package paxos

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Schedule tests replay hand-built message schedules from testdata/schedules.
// A schedule reads like a transcript: which node campaigns or proposes, which
// messages the network delivers, drops or holds back, and what each node must
// then know. Hand-driven cores (New, Campaign, Propose, Step, Tick,
// Ready/Advance on MemoryStorage) run every line, and two rules are checked
// after every line, not only at the end:
//
//   - agreement: no two nodes apply different values for one slot;
//   - the commit rule (see "Learning" in doc.go): a node that sends a commit
//     index under ballot b (a Commit or an Accept, which followers learn from
//     by ballot) knows, for every slot below it where it proposed under b,
//     that the chosen value is the one it proposed.
//
// The language, one command a line ('#' starts a comment):
//
//	nodes A=1 Y=2 ...            names the cluster's nodes
//	campaign N                    N starts phase 1
//	propose N DATA                N proposes one command whose data is DATA
//	tick N [K]                    N's clock advances K ticks (default 1)
//	deliver FROM->TO TYPE         delivers every held message that matches
//	flush FROM->TO TYPE           like deliver, but there may be none
//	drop FROM->TO TYPE            loses every held message that matches
//	expect role N ROLE            follower, preparing or master
//	expect commit N C             N's commit index is C
//	expect applied N SLOT DATA    N applied SLOT with a value whose commands
//	                              carry DATA ("-" for a no-op)
//	expect held FROM->TO TYPE     at least one such message is held
//
// FROM and TO are comma-separated names or '*'; TYPE is a message type
// (Prepare, Promise, Accept, Accepted, Nack, Commit, Fetch, FetchReply) or
// '*'. A delivery steps only the messages held when the line starts; what
// they produce is held until a later line delivers it.
//
// Replay one schedule with its trace:
//
//	go test ./paxos -run 'TestSchedules/stale-master-fetch' -v
func TestSchedules(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "schedules", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schedules in testdata/schedules: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			h := newScheduleHarness(t, 0)
			if err := h.runFile(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSchedulesCatchOldRules runs the schedules with the rules they were
// written against. The old rule (a master keeps its role when a slot it
// proposed in chose another value) breaks the commit rule at the first
// announcement, and with that check off, agreement a few lines later. The
// ballot-comparison patch survives the first schedule but not the second.
func TestSchedulesCatchOldRules(t *testing.T) {
	cases := []struct {
		schedule     string
		mut          mutation
		noCommitRule bool
		want         string // "" for a pass
	}{
		{"stale-master-fetch", mutMasterKeepsLostSlot, false, "stale-master-fetch.txt:71: deliver Z->A FetchReply: COMMIT RULE"},
		{"stale-master-fetch", mutMasterKeepsLostSlot, true, "stale-master-fetch.txt:77: flush A->Y *: SAFETY: Y applied slot 1 = vb"},
		{"stale-master-older-ballot", mutMasterKeepsLostSlot, false, "stale-master-older-ballot.txt:69: tick n1 2: COMMIT RULE"},
		{"stale-master-older-ballot", mutMasterKeepsLostSlot, true, "stale-master-older-ballot.txt:70: flush n1->n2 *: SAFETY: n2 applied slot 0 = vb"},
		{"stale-master-fetch", mutStepDownOnHigherBallot, false, ""},
		{"stale-master-older-ballot", mutStepDownOnHigherBallot, false, "stale-master-older-ballot.txt:69: tick n1 2: COMMIT RULE"},
		{"stale-master-older-ballot", mutStepDownOnHigherBallot, true, "stale-master-older-ballot.txt:70: flush n1->n2 *: SAFETY: n2 applied slot 0 = vb"},
	}
	for _, tc := range cases {
		h := newScheduleHarness(t, tc.mut)
		h.noCommitRule = tc.noCommitRule
		err := h.runFile(filepath.Join("testdata", "schedules", tc.schedule+".txt"))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s with mutation %d: %v", tc.schedule, tc.mut, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s with mutation %d (commit rule checked: %v): got %v, want an error starting %q", tc.schedule, tc.mut, !tc.noCommitRule, err, tc.want)
		}
	}
}

// schedNode is one hand-driven core of a schedule.
type schedNode struct {
	name    string
	id      NodeID
	core    *Node
	store   *MemoryStorage
	applied map[uint64]Value
}

type scheduleHarness struct {
	t   testing.TB
	mut mutation
	// noCommitRule lets a schedule run past a broken commit announcement.
	noCommitRule bool
	nodes        []*schedNode
	byName       map[string]*schedNode
	held         []Message
	truth        *truth
	// applied is the first value any node applied for each slot.
	applied map[uint64]Value
	line    int
	err     error
}

func newScheduleHarness(t testing.TB, mut mutation) *scheduleHarness {
	return &scheduleHarness{t: t, mut: mut, byName: map[string]*schedNode{}, applied: map[uint64]Value{}}
}

func (h *scheduleHarness) runFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		h.line++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if err := h.exec(fields); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", filepath.Base(path), h.line, strings.Join(fields, " "), err)
		}
		if h.err != nil {
			return fmt.Errorf("%s:%d: %s: %w", filepath.Base(path), h.line, strings.Join(fields, " "), h.err)
		}
	}
	return sc.Err()
}

func (h *scheduleHarness) exec(f []string) error {
	switch {
	case f[0] == "nodes":
		return h.setup(f[1:])
	case f[0] == "campaign" && len(f) == 2:
		n, err := h.node(f[1])
		if err != nil {
			return err
		}
		if err := n.core.Campaign(0); err != nil {
			return err
		}
		h.process(n)
	case f[0] == "propose" && len(f) == 3:
		n, err := h.node(f[1])
		if err != nil {
			return err
		}
		cmd := Command{ID: CommandID{Client: uint64(n.id), Seq: uint64(h.line)}, Data: []byte(f[2])}
		if err := n.core.Propose(0, cmd); err != nil {
			return err
		}
		h.process(n)
	case f[0] == "tick" && (len(f) == 2 || len(f) == 3):
		n, err := h.node(f[1])
		if err != nil {
			return err
		}
		k := 1
		if len(f) == 3 {
			if k, err = strconv.Atoi(f[2]); err != nil {
				return err
			}
		}
		for range k {
			n.core.Tick()
			h.process(n)
		}
	case (f[0] == "deliver" || f[0] == "drop" || f[0] == "flush") && len(f) == 3:
		match, err := h.matcher(f[1], f[2])
		if err != nil {
			return err
		}
		var now, keep []Message
		for _, m := range h.held {
			if match(m) {
				now = append(now, m)
			} else {
				keep = append(keep, m)
			}
		}
		if len(now) == 0 && f[0] != "flush" {
			return fmt.Errorf("no held message matches")
		}
		h.held = keep
		if f[0] == "drop" {
			return nil
		}
		for _, m := range now {
			n := h.nodes[m.To-1]
			h.t.Logf("  %s <- %s", n.name, h.describe(m))
			if err := n.core.Step(m); err != nil {
				return err
			}
			h.process(n)
			if h.err != nil {
				return nil
			}
		}
	case f[0] == "expect" && len(f) >= 3:
		return h.expect(f[1], f[2:])
	default:
		return fmt.Errorf("unknown command")
	}
	return nil
}

func (h *scheduleHarness) setup(args []string) error {
	for i, a := range args {
		name, id, ok := strings.Cut(a, "=")
		if !ok || id != strconv.Itoa(i+1) {
			return fmt.Errorf("want NAME=%d, got %q", i+1, a)
		}
		h.nodes = append(h.nodes, &schedNode{name: name, id: NodeID(i + 1)})
	}
	ids := make([]NodeID, len(h.nodes))
	for i, n := range h.nodes {
		ids[i] = n.id
	}
	for _, n := range h.nodes {
		n.store = NewMemoryStorage()
		n.applied = map[uint64]Value{}
		core, err := New(Config{ID: n.id, Nodes: ids, Groups: 1, Rand: func(int) int { return 0 }, mutate: h.mut}, n.store)
		if err != nil {
			return err
		}
		n.core = core
		h.byName[n.name] = n
	}
	h.truth = newTruth(ids, ChangeDelay)
	h.truth.noCommitRule = h.noCommitRule
	return nil
}

func (h *scheduleHarness) node(name string) (*schedNode, error) {
	n, ok := h.byName[name]
	if !ok {
		return nil, fmt.Errorf("no node %q", name)
	}
	return n, nil
}

// process runs n's Ready loop: writes are synced at once, messages to peers
// are held by the network, and n's own replies are stepped straight back.
func (h *scheduleHarness) process(n *schedNode) {
	for i := 0; i < 100 && n.core.HasReady() && h.err == nil; i++ {
		r := n.core.Ready()
		if err := n.store.Save(r.Persist); err != nil {
			h.err = err
			return
		}
		if err := h.truth.persisted(n.id, r.Persist); err != nil {
			h.err = err
			return
		}
		for _, a := range r.Committed {
			h.apply(n, a)
		}
		var local []Message
		for _, m := range append(r.Messages, r.AfterSync...) {
			if err := h.truth.sent(m); err != nil {
				h.err = err
				return
			}
			if m.To == n.id {
				local = append(local, m)
			} else {
				h.held = append(h.held, m)
			}
		}
		n.core.Advance(r)
		for _, m := range local {
			if err := n.core.Step(m); err != nil {
				h.err = err
				return
			}
		}
	}
}

func (h *scheduleHarness) apply(n *schedNode, a Apply) {
	n.applied[a.Slot] = a.Value
	h.t.Logf("  %s applies slot %d = %s", n.name, a.Slot, valueData(a.Value))
	if prev, ok := h.applied[a.Slot]; ok && prev.ID != a.Value.ID {
		h.err = fmt.Errorf("SAFETY: %s applied slot %d = %s, but another node applied %s", n.name, a.Slot, valueData(a.Value), valueData(prev))
		return
	}
	h.applied[a.Slot] = a.Value
}

func (h *scheduleHarness) expect(what string, args []string) error {
	if what == "held" {
		if len(args) != 2 {
			return fmt.Errorf("want: expect held FROM->TO TYPE")
		}
		match, err := h.matcher(args[0], args[1])
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(h.held, match) {
			return fmt.Errorf("no such message is held")
		}
		return nil
	}
	n, err := h.node(args[0])
	if err != nil {
		return err
	}
	st, _ := n.core.Status(0)
	switch {
	case what == "role" && len(args) == 2:
		if st.Role != args[1] {
			return fmt.Errorf("%s is %s (ballot %s)", n.name, st.Role, st.Ballot)
		}
	case what == "commit" && len(args) == 2:
		if strconv.FormatUint(st.Commit, 10) != args[1] {
			return fmt.Errorf("%s's commit index is %d", n.name, st.Commit)
		}
	case what == "applied" && len(args) == 3:
		slot, err := strconv.ParseUint(args[1], 10, 64)
		if err != nil {
			return err
		}
		v, ok := n.applied[slot]
		if !ok {
			return fmt.Errorf("%s has not applied slot %d", n.name, slot)
		}
		if got := valueData(v); got != args[2] {
			return fmt.Errorf("%s applied slot %d = %s", n.name, slot, got)
		}
	default:
		return fmt.Errorf("unknown expectation")
	}
	return nil
}

// matcher parses FROM->TO TYPE.
func (h *scheduleHarness) matcher(route, typ string) (func(Message) bool, error) {
	from, to, ok := strings.Cut(route, "->")
	if !ok {
		return nil, fmt.Errorf("want FROM->TO, got %q", route)
	}
	set := func(list string) (map[NodeID]bool, error) {
		if list == "*" {
			return nil, nil
		}
		s := map[NodeID]bool{}
		for _, name := range strings.Split(list, ",") {
			n, err := h.node(name)
			if err != nil {
				return nil, err
			}
			s[n.id] = true
		}
		return s, nil
	}
	fs, err := set(from)
	if err != nil {
		return nil, err
	}
	ts, err := set(to)
	if err != nil {
		return nil, err
	}
	var mt MsgType
	if typ != "*" {
		i := slices.Index(msgTypeNames[:], typ)
		if i <= 0 {
			return nil, fmt.Errorf("unknown message type %q", typ)
		}
		mt = MsgType(i)
	}
	return func(m Message) bool {
		return (fs == nil || fs[m.From]) && (ts == nil || ts[m.To]) && (mt == 0 || m.Type == mt)
	}, nil
}

func (h *scheduleHarness) describe(m Message) string {
	s := fmt.Sprintf("%s from %s b=%s slot=%d commit=%d", m.Type, h.nodes[m.From-1].name, m.Ballot, m.Slot, m.Commit)
	for _, e := range m.Entries {
		s += fmt.Sprintf(" [s%d b=%s %s", e.Slot, e.Ballot, valueData(e.Value))
		if e.Chosen {
			s += " chosen"
		}
		s += "]"
	}
	return s
}

// valueData names a value by its commands' data, "-" for a no-op.
func valueData(v Value) string {
	if len(v.Cmds) == 0 {
		return "-"
	}
	parts := make([]string, len(v.Cmds))
	for i, c := range v.Cmds {
		parts[i] = string(c.Data)
	}
	return strings.Join(parts, "+")
}
