package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Snapshots (issue 11, field report F4). Every SnapshotEvery applied slots of
// a group, the replica snapshots the group's state machine together with its
// exactly-once table (the Applier), stores it durably with its slot, and the
// store deletes the log below the slot minus SnapshotMargin. A node that fell
// behind the log its peers keep is told so by the core (Ready.Snapshots): the
// replica asks the one peer the core named, through the SnapshotFetcher, and
// installs what comes back only after checking it (slot, checksum, both
// parts decode), durably first, then into the state machine, then the core.
// Nothing of the old state is touched before the new one is verified, and a
// failed transfer is simply asked for again with the core's next fetch.

// Snapshotter is implemented by state machines that can snapshot a group.
// Both methods run on the replica's goroutine, between applies.
type Snapshotter interface {
	// SnapshotGroup returns group g's state, holding every slot applied to
	// it so far.
	SnapshotGroup(g paxos.GroupID) ([]byte, error)
	// RestoreGroup replaces group g's state with one SnapshotGroup
	// returned (on this node or another). On an error the old state must
	// be left as it was.
	RestoreGroup(g paxos.GroupID, data []byte) error
}

// SnapshotCapturer is implemented by Snapshotters that split a snapshot in
// two: CaptureGroup copies group g's state between applies, on the
// replica's goroutine, and the encode function it returns may run on any
// goroutine, later, while the group goes on applying. A large table's
// encoding then does not stall proposals. The bytes encode returns must be
// what SnapshotGroup would have returned at the moment of the capture.
type SnapshotCapturer interface {
	CaptureGroup(g paxos.GroupID) (encode func() ([]byte, error), err error)
}

// SnapshotStore is implemented by stores that keep snapshots (and so can
// compact their logs).
type SnapshotStore interface {
	paxos.SnapshotStorage
	// SaveSnapshot durably records group g's snapshot at slot, with every
	// earlier write, and deletes g's log below slot-margin. A snapshot at
	// or below the one kept changes nothing.
	SaveSnapshot(g paxos.GroupID, slot uint64, data []byte, margin uint64) error
	// LoadSnapshot returns group g's newest snapshot and its slot (zero and
	// nil if none).
	LoadSnapshot(g paxos.GroupID) (slot uint64, data []byte, err error)
}

// SnapshotFetcher transfers a group's snapshot from a peer: the receiver
// picks the peer and names the transfer. It returns the snapshot's slot and
// bytes, at least minSlot, as the peer's store holds them.
type SnapshotFetcher interface {
	FetchSnapshot(ctx context.Context, from paxos.NodeID, g paxos.GroupID, minSlot uint64) (slot uint64, data []byte, err error)
}

// Defaults for snapshots.
const (
	DefaultSnapshotEvery  = 10000
	DefaultSnapshotMargin = 1024
	// snapshotFetchTimeout bounds one transfer; the core asks again after.
	snapshotFetchTimeout = 2 * time.Minute
)

// ErrBadSnapshot wraps every reason a snapshot is refused.
var ErrBadSnapshot = errors.New("replica: bad snapshot")

// The envelope around a group snapshot: "RSNP", version=2, slot, the
// Applier's bytes (length-prefixed), the state machine's bytes
// (length-prefixed), the group's membership at the slot (length-prefixed,
// paxos.AppendMembership), and the CRC-32C of all bytes before it. Version
// 1, written before membership changes existed, has no membership: the
// group's membership is then the initial one, which is what it was.
const (
	envelopeMagic   = "RSNP"
	envelopeVersion = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeEnvelope writes version 2, or version 1 (no membership: whoever
// opens it takes its own initial membership) when ms is nil.
func encodeEnvelope(slot uint64, applier, state []byte, ms *paxos.Membership) []byte {
	var members []byte
	version := byte(envelopeVersion)
	if ms == nil {
		version = 1
	} else {
		members = paxos.AppendMembership(nil, ms)
	}
	b := make([]byte, 0, len(envelopeMagic)+1+4*binary.MaxVarintLen64+len(applier)+len(state)+len(members)+4)
	b = append(b, envelopeMagic...)
	b = append(b, version)
	b = binary.AppendUvarint(b, slot)
	b = binary.AppendUvarint(b, uint64(len(applier)))
	b = append(b, applier...)
	b = binary.AppendUvarint(b, uint64(len(state)))
	b = append(b, state...)
	if ms != nil {
		b = binary.AppendUvarint(b, uint64(len(members)))
		b = append(b, members...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeEnvelope checks a snapshot's envelope and returns its parts, which
// alias b (the membership does not). A version-1 envelope has no
// membership: ms is then empty, which the core reads as the initial one.
func decodeEnvelope(b []byte) (slot uint64, applier, state []byte, ms paxos.Membership, err error) {
	bad := func(format string, args ...any) (uint64, []byte, []byte, paxos.Membership, error) {
		return 0, nil, nil, paxos.Membership{}, fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
	}
	if len(b) < len(envelopeMagic)+1+4 || string(b[:len(envelopeMagic)]) != envelopeMagic {
		return bad("not a snapshot (%d bytes)", len(b))
	}
	version := b[len(envelopeMagic)]
	if version != 1 && version != envelopeVersion {
		return bad("unknown snapshot version %d (this build reads 1 and %d)", version, envelopeVersion)
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return bad("checksum mismatch: the snapshot is damaged")
	}
	p := body[len(envelopeMagic)+1:]
	next := func(what string) ([]byte, bool) {
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p)-n) {
			return nil, false
		}
		out := p[n : n+int(l)]
		p = p[n+int(l):]
		return out, true
	}
	s, n := binary.Uvarint(p)
	if n <= 0 {
		return bad("no slot")
	}
	p = p[n:]
	applier, ok1 := next("applier")
	state, ok2 := next("state")
	var members []byte
	ok3 := true
	if version >= 2 {
		members, ok3 = next("membership")
	}
	if !ok1 || !ok2 || !ok3 || len(p) != 0 {
		return bad("malformed parts")
	}
	if version >= 2 {
		if ms, err = paxos.DecodeMembership(members); err != nil {
			return bad("%v", err)
		}
	}
	return s, applier, state, ms, nil
}

// snapshotting reports whether snapshots are on: the store keeps them and
// the state machine makes them.
func (r *Replica) snapshotting() (SnapshotStore, Snapshotter, bool) {
	st, ok1 := r.cfg.Store.(SnapshotStore)
	sm, ok2 := r.cfg.StateMachine.(Snapshotter)
	return st, sm, ok1 && ok2 && r.cfg.SnapshotEvery > 0
}

// restoreAtStart loads every group's newest snapshot into the appliers and
// the state machine; the core, built from the same store, replays the log
// from the snapshot's slot on.
func (r *Replica) restoreAtStart() error {
	st, sm, ok := r.snapshotting()
	if !ok {
		return nil
	}
	for i := range r.appliers {
		g := paxos.GroupID(i)
		slot, data, err := st.LoadSnapshot(g)
		if err != nil {
			return fmt.Errorf("replica: load snapshot of group %d: %w", g, err)
		}
		if slot == 0 {
			continue
		}
		if err := r.restore(sm, g, slot, data); err != nil {
			return fmt.Errorf("replica: the stored snapshot of group %d at slot %d: %w", g, slot, err)
		}
	}
	return nil
}

// restore checks data and, only if all of it is good, replaces group g's
// applier and state.
func (r *Replica) restore(sm Snapshotter, g paxos.GroupID, slot uint64, data []byte) error {
	s, ap, state, ms, err := decodeEnvelope(data)
	if err != nil {
		return err
	}
	if s != slot {
		return fmt.Errorf("%w: it says slot %d, it was stored or sent as slot %d", ErrBadSnapshot, s, slot)
	}
	a, err := paxos.RestoreApplier(ap, r.cfg.MaxClients, applierResults)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if err := sm.RestoreGroup(g, state); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	r.appliers[g] = a
	if len(ms.Epochs) == 0 {
		ms = paxos.InitialMembership(r.cfg.Core.Nodes)
	}
	r.ms[g] = ms
	r.snapAt[g] = slot
	r.next[g] = slot
	return nil
}

// maybeSnapshot snapshots group g when SnapshotEvery slots were applied
// since its last snapshot. With a SnapshotCapturer only the capture runs
// here; the encoding and the durable save run on a goroutine of their own
// (snapshotSaved finishes them), one per group at a time.
func (r *Replica) maybeSnapshot(g paxos.GroupID) error {
	st, sm, ok := r.snapshotting()
	if !ok || r.saving[g] || r.next[g] < r.snapAt[g]+uint64(r.cfg.SnapshotEvery) {
		return nil
	}
	slot := r.next[g]
	start := time.Now()
	capt, async := sm.(SnapshotCapturer)
	if !async {
		state, err := sm.SnapshotGroup(g)
		if err != nil {
			r.snapshotFailed(g, slot, err)
			return nil
		}
		data := encodeEnvelope(slot, r.appliers[g].Snapshot(), state, &r.ms[g])
		if err := st.SaveSnapshot(g, slot, data, r.cfg.SnapshotMargin); err != nil {
			return fmt.Errorf("replica: save snapshot of group %d at slot %d: %w", g, slot, err)
		}
		return r.snapshotSaved(savedSnapshot{g: g, slot: slot, bytes: len(data), captured: time.Since(start), took: time.Since(start)})
	}
	encode, err := capt.CaptureGroup(g)
	if err != nil {
		r.snapshotFailed(g, slot, err)
		return nil
	}
	applier := r.appliers[g].Snapshot()
	ms := r.ms[g].Clone() // the loop goes on applying changes to r.ms
	captured := time.Since(start)
	r.saving[g] = true
	r.saves.Add(1)
	go func() {
		defer r.saves.Done()
		res := savedSnapshot{g: g, slot: slot, captured: captured}
		state, err := encode()
		if err != nil {
			res.encodeErr = err
		} else {
			data := encodeEnvelope(slot, applier, state, &ms)
			res.bytes = len(data)
			if err := st.SaveSnapshot(g, slot, data, r.cfg.SnapshotMargin); err != nil {
				res.saveErr = fmt.Errorf("replica: save snapshot of group %d at slot %d: %w", g, slot, err)
			}
		}
		res.took = time.Since(start)
		r.saved <- res // room for one per group: never blocks
	}()
	return nil
}

// savedSnapshot is a snapshot's outcome, handed to the loop.
type savedSnapshot struct {
	g              paxos.GroupID
	slot           uint64
	bytes          int
	captured, took time.Duration // on the loop; in all
	encodeErr      error         // the state machine could not encode: the log is kept
	saveErr        error         // the store failed: the node stops
}

// snapshotFailed keeps the log when the state machine cannot snapshot, and
// tries again after the next SnapshotEvery slots.
func (r *Replica) snapshotFailed(g paxos.GroupID, slot uint64, err error) {
	r.cfg.Logger.Error("snapshot of a group failed; its log is kept", "group", g, "slot", slot, "err", err)
	r.snapAt[g] = max(r.snapAt[g], slot)
}

// snapshotSaved finishes a snapshot on the loop: the core may drop what it
// holds. A snapshot older than one installed from a peer meanwhile changed
// nothing in the store, and changes nothing here.
func (r *Replica) snapshotSaved(s savedSnapshot) error {
	r.saving[s.g] = false
	if s.saveErr != nil {
		return s.saveErr
	}
	if s.encodeErr != nil {
		r.snapshotFailed(s.g, s.slot, s.encodeErr)
		return nil
	}
	r.snapAt[s.g] = max(r.snapAt[s.g], s.slot)
	r.cfg.Logger.Debug("group snapshot saved", "group", s.g, "slot", s.slot, "bytes", s.bytes,
		"loop_stall", s.captured.String(), "took", s.took.String())
	return r.core.SnapshotTaken(s.g, s.slot)
}

// installJob is a transfer's result, handed to the loop.
type installJob struct {
	need paxos.SnapshotNeed
	slot uint64
	data []byte
	err  error
}

// fetchSnapshot starts the transfer the core asked for, unless one runs for
// the group already.
func (r *Replica) fetchSnapshot(ctx context.Context, need paxos.SnapshotNeed) {
	if r.cfg.Fetcher == nil {
		r.cfg.Logger.Error("this node is behind its peers' logs and needs a snapshot, but has no way to fetch one", "group", need.Group, "from", need.From)
		return
	}
	if r.fetching[need.Group] {
		return
	}
	r.fetching[need.Group] = true
	go func() {
		ctx, cancel := context.WithTimeout(ctx, snapshotFetchTimeout)
		defer cancel()
		slot, data, err := r.cfg.Fetcher.FetchSnapshot(ctx, need.From, need.Group, need.Slot)
		select {
		case r.installs <- installJob{need: need, slot: slot, data: data, err: err}:
		case <-ctx.Done():
			select {
			case r.installs <- installJob{need: need, err: ctx.Err()}:
			case <-r.stopped:
			}
		}
	}()
}

// install puts a fetched snapshot in place: checked, durable, restored, and
// then told to the core. A bad or stale snapshot changes nothing.
func (r *Replica) install(j installJob) error {
	g := j.need.Group
	r.fetching[g] = false
	if j.err != nil {
		r.cfg.Logger.Warn("snapshot transfer failed; the core asks again with its next fetch", "group", g, "from", j.need.From, "err", j.err)
		return nil
	}
	st, sm, ok := r.snapshotting()
	if !ok {
		return nil
	}
	if j.slot < j.need.Slot || j.slot <= r.next[g] {
		return nil // stale: we caught up meanwhile, or the peer sent an older one
	}
	// Check every part before anything is written or replaced.
	s, ap, _, _, err := decodeEnvelope(j.data)
	if err == nil && s != j.slot {
		err = fmt.Errorf("%w: it says slot %d, it was sent as slot %d", ErrBadSnapshot, s, j.slot)
	}
	if err == nil {
		_, err = paxos.RestoreApplier(ap, r.cfg.MaxClients, applierResults)
	}
	if err != nil {
		r.cfg.Logger.Error("refused a snapshot from a peer", "group", g, "from", j.need.From, "slot", j.slot, "err", err)
		return nil
	}
	if err := st.SaveSnapshot(g, j.slot, j.data, r.cfg.SnapshotMargin); err != nil {
		return fmt.Errorf("replica: save the snapshot of group %d at slot %d: %w", g, j.slot, err)
	}
	if err := r.restore(sm, g, j.slot, j.data); err != nil {
		// Durable but not restorable: the state machine refused what the
		// envelope vouched for. Stop rather than serve a half state.
		return fmt.Errorf("replica: restore the snapshot of group %d at slot %d: %w", g, j.slot, err)
	}
	r.cfg.Logger.Info("installed a snapshot from a peer", "group", g, "from", j.need.From, "slot", j.slot, "bytes", len(j.data))
	r.installed.Add(1)
	return r.core.InstallSnapshot(g, j.slot, r.ms[g])
}

// snapshotMembership reads the membership stored with group g's newest
// snapshot, for the core's start (paxos.Config.SnapshotMembership).
func snapshotMembership(st SnapshotStore) func(g paxos.GroupID) (paxos.Membership, error) {
	return func(g paxos.GroupID) (paxos.Membership, error) {
		slot, data, err := st.LoadSnapshot(g)
		if err != nil || slot == 0 {
			return paxos.Membership{}, err
		}
		_, _, _, ms, err := decodeEnvelope(data)
		return ms, err
	}
}
