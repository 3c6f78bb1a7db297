package client

import "sync"

// seqTracker hands out the sequence numbers of one client's commands and
// computes the Ack each command carries.
//
// Invariant: every seq below low is done (its outcome is known to the
// caller, or it will never be sent again), and low itself is open or equal
// to next. Ack = low, so a node may forget the cached outcome of every
// command below it; a command that may still be re-sent (a retry, or a
// waiting Acquire that may be re-sent to a new master) stays open, so its
// outcome stays cached and a re-send is answered as a duplicate instead of
// "forgotten".
type seqTracker struct {
	mu   sync.Mutex // guards the fields below
	next uint64     // the next seq to hand out; seqs start at 1
	low  uint64     // the lowest open seq, or next when none is open
	open map[uint64]struct{}
}

func newSeqTracker() *seqTracker {
	return &seqTracker{next: 1, low: 1, open: map[uint64]struct{}{}}
}

// begin opens a new command and returns its seq.
func (t *seqTracker) begin() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.next
	t.next++
	t.open[s] = struct{}{}
	return s
}

// done closes seq: the client will never send it again.
func (t *seqTracker) done(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.open, seq)
	for t.low < t.next {
		if _, ok := t.open[t.low]; ok {
			break
		}
		t.low++
	}
}

// ack returns the lowest seq whose outcome the client does not know yet.
func (t *seqTracker) ack() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.low
}
