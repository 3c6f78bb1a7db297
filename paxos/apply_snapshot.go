package paxos

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
)

// An Applier's state is part of every group snapshot: without it, a node that
// installs a snapshot would apply again a command that a client retries with
// the same id after the snapshot's slot (exactly-once, F6).
//
// Layout: "APLR", version=1, client count, then per client in id order: id,
// ack, last slot, result count, then per result in sequence order: seq, slot,
// index, result length, result bytes; last the CRC-32C (Castagnoli) of every
// byte before it, little-endian. Integers are varints in their shortest form.

const (
	applierMagic   = "APLR"
	applierVersion = 1
	// minClientBytes and minResultBytes are the smallest encodings of a
	// client and of a result, to refuse counts the input cannot hold.
	minClientBytes = 4
	minResultBytes = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot returns the Applier's state as bytes that RestoreApplier accepts.
// Appliers that applied the same slots return identical bytes.
func (a *Applier) Snapshot() []byte {
	ids := make([]uint64, 0, len(a.clients))
	size := 16
	for id, rec := range a.clients {
		ids = append(ids, id)
		size += 24
		for _, o := range rec.results {
			size += 24 + len(o.Result)
		}
	}
	slices.Sort(ids)
	b := make([]byte, 0, size)
	b = append(b, applierMagic...)
	b = append(b, applierVersion)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		rec := a.clients[id]
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, rec.ack)
		b = binary.AppendUvarint(b, rec.lastSlot)
		seqs := make([]uint64, 0, len(rec.results))
		for s := range rec.results {
			seqs = append(seqs, s)
		}
		slices.Sort(seqs)
		b = binary.AppendUvarint(b, uint64(len(seqs)))
		for _, s := range seqs {
			o := rec.results[s]
			b = binary.AppendUvarint(b, s)
			b = binary.AppendUvarint(b, o.Slot)
			b = binary.AppendUvarint(b, uint64(o.Index))
			b = binary.AppendUvarint(b, uint64(len(o.Result)))
			b = append(b, o.Result...)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// RestoreApplier builds an Applier from Snapshot's bytes, with the given
// bounds (as NewApplier). It refuses, with an error wrapping ErrCorrupt,
// input that is truncated, fails its checksum, is not canonical, or holds
// more clients or results than the bounds allow; it never panics.
func RestoreApplier(b []byte, maxClients, maxResults int) (*Applier, error) {
	d := decoder{b: b, what: "applier snapshot", entry: -1, cmd: -1}
	switch {
	case len(b) < len(applierMagic)+1+4:
		d.failf("%d bytes, too short for a snapshot", len(b))
	case string(b[:len(applierMagic)]) != applierMagic:
		d.failf("does not start with %q", applierMagic)
	case b[len(applierMagic)] != applierVersion:
		d.failf("unknown format version %d (this build reads version %d; was it written by a newer lockd?)", b[len(applierMagic)], applierVersion)
		d.err.(*decodeError).version = true
	case crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]):
		d.failf("checksum mismatch: the snapshot is damaged")
	}
	if d.err != nil {
		return nil, d.err
	}
	d.b = b[:len(b)-4]
	d.off = len(applierMagic) + 1
	a := NewApplier(maxClients, maxResults)
	n := d.count("number of clients", "clients", maxClients, "the Applier's client bound", minClientBytes)
	prev := uint64(0)
	for i := range n {
		id := d.uvarint("client id")
		if d.err == nil && i > 0 && id <= prev {
			d.failf("client %d after client %d: not in id order", id, prev)
		}
		prev = id
		rec := &clientRecord{ack: d.uvarint("ack"), lastSlot: d.uvarint("last slot")}
		m := d.count("number of results", "results", maxResults, "the Applier's result bound", minResultBytes)
		if d.err != nil {
			return nil, d.err
		}
		rec.results = make(map[uint64]Outcome, m)
		prevSeq := uint64(0)
		for j := range m {
			seq := d.uvarint("sequence number")
			if d.err == nil && (j > 0 && seq <= prevSeq || seq < rec.ack) {
				d.failf("result for sequence %d of client %d is out of order or below its ack %d", seq, id, rec.ack)
			}
			prevSeq = seq
			o := Outcome{Slot: d.uvarint("slot"), Index: int(d.u32("index"))}
			l := d.uvarint("result length")
			if d.err != nil {
				return nil, d.err
			}
			if l > uint64(len(d.b)-d.off) {
				d.failf("result of %d bytes, but only %d bytes are left", l, len(d.b)-d.off)
				return nil, d.err
			}
			if l > 0 {
				o.Result = slices.Clone(d.b[d.off : d.off+int(l)])
				d.off += int(l)
			}
			rec.results[seq] = o
		}
		a.clients[id] = rec
	}
	if !d.finish() {
		return nil, d.err
	}
	return a, nil
}
