package election

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/lockd/lockd/paxos"
)

// LeaseCmd is the command the election proposes through a group's log: a
// master lease, or the release of one.
//
// A lease says "Holder is master of the group for Duration". Its holder counts
// Duration from the moment it sent the proposal, minus Config.Drift; every
// other node counts it from the moment it applied it.
//
// A release (Release set) says "Holder gives the group up in favour of To"
// (To may be zero). Applied after a lease of the same holder and incarnation,
// it ends that holder's leases at once on every node.
type LeaseCmd struct {
	Holder   paxos.NodeID
	Duration time.Duration
	// Nonce lets the holder recognize its own proposal when it is applied.
	// The high 32 bits are the holder's incarnation for the group (random,
	// drawn when the Elector starts), the low 32 bits a counter that grows
	// with every command of that incarnation, so that a release can name the
	// leases it ends.
	Nonce   uint64
	Release bool
	To      paxos.NodeID
}

// MaxLeaseDuration bounds LeaseCmd.Duration, so that a corrupt or hostile
// command cannot freeze a group for a long time.
const MaxLeaseDuration = time.Hour

// leaseCmdVersion is the first byte of every encoded LeaseCmd.
const leaseCmdVersion = 1

// leaseCmdSize is the exact size of an encoded LeaseCmd: version, flags,
// holder (4), duration in nanoseconds (8), nonce (8), to (4).
const leaseCmdSize = 26

const flagRelease = 1 << 0

// Encode returns the encoding of c: fixed-width and big-endian, so that every
// LeaseCmd has exactly one encoding. The server puts its own tag byte in
// front; Encode writes only the payload.
func (c LeaseCmd) Encode() []byte {
	b := make([]byte, 0, leaseCmdSize)
	var flags byte
	if c.Release {
		flags |= flagRelease
	}
	b = append(b, leaseCmdVersion, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(c.Holder))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Duration))
	b = binary.BigEndian.AppendUint64(b, c.Nonce)
	b = binary.BigEndian.AppendUint32(b, uint32(c.To))
	return b
}

// DecodeLeaseCmd decodes what Encode produced. It accepts exactly the
// encodings of valid commands (see LeaseCmd.Validate) and nothing else.
func DecodeLeaseCmd(b []byte) (LeaseCmd, error) {
	if len(b) != leaseCmdSize {
		return LeaseCmd{}, fmt.Errorf("election: lease command is %d bytes, want %d; it was not written by this version of lockd", len(b), leaseCmdSize)
	}
	if b[0] != leaseCmdVersion {
		return LeaseCmd{}, fmt.Errorf("election: lease command version %d, this node reads version %d; upgrade the node", b[0], leaseCmdVersion)
	}
	if b[1]&^flagRelease != 0 {
		return LeaseCmd{}, fmt.Errorf("election: lease command has unknown flags %#x; upgrade the node", b[1]&^flagRelease)
	}
	c := LeaseCmd{
		Release:  b[1]&flagRelease != 0,
		Holder:   paxos.NodeID(binary.BigEndian.Uint32(b[2:])),
		Duration: time.Duration(binary.BigEndian.Uint64(b[6:])),
		Nonce:    binary.BigEndian.Uint64(b[14:]),
		To:       paxos.NodeID(binary.BigEndian.Uint32(b[22:])),
	}
	if err := c.Validate(); err != nil {
		return LeaseCmd{}, err
	}
	return c, nil
}

// Validate reports what is wrong with c, if anything: a holder and a nonce
// are required; a lease lasts more than zero and at most MaxLeaseDuration and
// names no To; a release has no Duration.
func (c LeaseCmd) Validate() error {
	switch {
	case c.Holder == 0:
		return fmt.Errorf("election: lease command without a holder (node ids start at 1)")
	case c.Nonce == 0:
		return fmt.Errorf("election: lease command of node %d without a nonce", c.Holder)
	case c.Release && c.Duration != 0:
		return fmt.Errorf("election: release by node %d carries a duration (%v); a release has none", c.Holder, c.Duration)
	case !c.Release && (c.Duration <= 0 || c.Duration > MaxLeaseDuration):
		return fmt.Errorf("election: lease of node %d lasts %v, want more than 0 and at most %v", c.Holder, c.Duration, MaxLeaseDuration)
	case !c.Release && c.To != 0:
		return fmt.Errorf("election: lease of node %d names a successor (%d); only a release does", c.Holder, c.To)
	}
	return nil
}

// String describes the command for logs.
func (c LeaseCmd) String() string {
	if c.Release {
		return fmt.Sprintf("release by %d to %d (nonce %#x)", c.Holder, c.To, c.Nonce)
	}
	return fmt.Sprintf("lease of %d for %v (nonce %#x)", c.Holder, c.Duration, c.Nonce)
}

// incarnation and counter split a nonce (see LeaseCmd.Nonce).
func incarnation(nonce uint64) uint32 { return uint32(nonce >> 32) }
func counter(nonce uint64) uint32     { return uint32(nonce) }
func makeNonce(inc, ctr uint32) uint64 {
	return uint64(inc)<<32 | uint64(ctr)
}
