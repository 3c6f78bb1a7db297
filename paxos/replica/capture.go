package replica

import (
	"context"
	"fmt"

	"github.com/lockd/lockd/paxos"
)

// Capture returns a snapshot of group g as it stands now, in the envelope a
// stored or transferred snapshot has (slot, exactly-once table, state
// machine), without storing it: lockctl snapshot save reads it through the
// group's master. It runs on the replica's goroutine, between two applies,
// so the snapshot holds exactly the slots below the returned slot, all of
// them chosen.
func (r *Replica) Capture(ctx context.Context, g paxos.GroupID) (slot uint64, data []byte, err error) {
	sm, ok := r.cfg.StateMachine.(Snapshotter)
	if !ok {
		return 0, nil, fmt.Errorf("replica: group %d: the state machine cannot snapshot", g)
	}
	if int(g) >= len(r.appliers) {
		return 0, nil, fmt.Errorf("replica: no group %d (%d groups)", g, len(r.appliers))
	}
	type answer struct {
		slot uint64
		data []byte
		err  error
	}
	done := make(chan answer, 1) // buffered: the loop never waits for us
	q := func(*paxos.Node) {
		state, err := sm.SnapshotGroup(g)
		if err != nil {
			done <- answer{err: fmt.Errorf("replica: snapshot of group %d: %w", g, err)}
			return
		}
		slot := r.next[g]
		done <- answer{slot: slot, data: encodeEnvelope(slot, r.appliers[g].Snapshot(), state, &r.ms[g])}
	}
	select {
	case r.queries <- q:
	case <-r.stopped:
		return 0, nil, ErrStopped
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
	select {
	case a := <-done:
		return a.slot, a.data, a.err
	case <-r.stopped:
		return 0, nil, ErrStopped
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// OpenSnapshot checks a snapshot's envelope (magic, version, checksum) and
// returns its slot, its exactly-once table and its state machine part,
// which alias data. Errors wrap ErrBadSnapshot. The membership it carries
// is left out: a restore seeds a new cluster, whose members are its own.
func OpenSnapshot(data []byte) (slot uint64, applier, state []byte, err error) {
	slot, applier, state, _, err = decodeEnvelope(data)
	return slot, applier, state, err
}

// SealSnapshot builds the envelope OpenSnapshot opens. lockd restore uses
// the pair to rewrite the state machine part of a backed-up group before it
// seeds a new cluster's data dir with it.
// It writes no membership (envelope version 1), so the restored cluster's
// groups start with their own initial membership (lockd restore's nodes).
func SealSnapshot(slot uint64, applier, state []byte) []byte {
	return encodeEnvelope(slot, applier, state, nil)
}

// CheckApplier reports whether applier is an exactly-once table that a
// replica with the default client bound would restore.
func CheckApplier(applier []byte) error {
	if _, err := paxos.RestoreApplier(applier, DefaultMaxClients, applierResults); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return nil
}

// DefaultMaxClients is Config.MaxClients's default.
const DefaultMaxClients = 100000
