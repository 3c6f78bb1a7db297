package paxos

import "slices"

// Outcome is what applying one command produced, remembered per command id
// so that a retry of the same id gets the same answer without applying again.
type Outcome struct {
	// Slot and Index say where the command took effect: the slot and its
	// position in the slot's batch.
	Slot  uint64
	Index int
	// Result is what the state machine returned.
	Result []byte
	// Duplicate is set when this occurrence was not applied because the
	// same id took effect earlier (at Slot, Index).
	Duplicate bool
	// Forgotten is set for an occurrence whose id the client acknowledged
	// long ago; its first outcome is no longer known. It was not applied.
	Forgotten bool
}

// Applier applies chosen values to a state machine with each command id
// taking effect at most once. It is deterministic: replicas that apply the
// same slots end with the same table. It is not safe for concurrent use.
type Applier struct {
	clients    map[uint64]*clientRecord
	maxClients int
	maxResults int
}

type clientRecord struct {
	ack      uint64             // every seq below it is acknowledged and forgotten
	results  map[uint64]Outcome // outcomes of seqs >= ack
	lastSlot uint64             // for eviction of idle clients
}

// NewApplier returns an Applier that remembers at most maxClients clients
// and maxResults unacknowledged outcomes per client (the oldest go first).
func NewApplier(maxClients, maxResults int) *Applier {
	return &Applier{clients: map[uint64]*clientRecord{}, maxClients: maxClients, maxResults: maxResults}
}

// ApplyFunc applies one command and returns its result.
type ApplyFunc func(slot uint64, index int, cmd *Command) []byte

// Apply applies the commands of v, chosen at slot, in order. apply runs for
// each command that takes effect; done (if not nil) runs for every command,
// applied or not, with its outcome. A membership change (ChangeOf) is not a
// client command: it is skipped (the core and Membership.Apply take it in).
func (a *Applier) Apply(slot uint64, v *Value, apply ApplyFunc, done func(cmd *Command, o Outcome)) {
	if _, ok := ChangeOf(v); ok {
		return
	}
	for i := range v.Cmds {
		cmd := &v.Cmds[i]
		o := a.applyOne(slot, i, cmd, apply)
		if done != nil {
			done(cmd, o)
		}
	}
}

func (a *Applier) applyOne(slot uint64, index int, cmd *Command, apply ApplyFunc) Outcome {
	rec := a.clients[cmd.ID.Client]
	if rec == nil {
		rec = &clientRecord{results: map[uint64]Outcome{}}
		a.clients[cmd.ID.Client] = rec
		a.evict(cmd.ID.Client)
	}
	rec.lastSlot = slot
	if cmd.ID.Seq < rec.ack {
		return Outcome{Slot: slot, Index: index, Duplicate: true, Forgotten: true}
	}
	if o, ok := rec.results[cmd.ID.Seq]; ok {
		o.Duplicate = true
		return o
	}
	o := Outcome{Slot: slot, Index: index, Result: apply(slot, index, cmd)}
	rec.results[cmd.ID.Seq] = o
	if cmd.Ack > rec.ack {
		for s := range rec.results {
			if s < cmd.Ack {
				delete(rec.results, s)
			}
		}
		rec.ack = cmd.Ack
	}
	if len(rec.results) > a.maxResults {
		seqs := make([]uint64, 0, len(rec.results))
		for s := range rec.results {
			seqs = append(seqs, s)
		}
		slices.Sort(seqs)
		for _, s := range seqs[:len(seqs)-a.maxResults] {
			delete(rec.results, s)
		}
		rec.ack = seqs[len(seqs)-a.maxResults]
	}
	return o
}

// evict forgets the idlest client (lowest last slot, then lowest id) while
// there are too many. The choice depends only on applied state, so every
// replica forgets the same client.
func (a *Applier) evict(keep uint64) {
	for len(a.clients) > a.maxClients {
		var victim uint64
		var best *clientRecord
		for id, rec := range a.clients {
			if id == keep {
				continue
			}
			if best == nil || rec.lastSlot < best.lastSlot || (rec.lastSlot == best.lastSlot && id < victim) {
				victim, best = id, rec
			}
		}
		if best == nil {
			return
		}
		delete(a.clients, victim)
	}
}
