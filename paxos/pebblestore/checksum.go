package pebblestore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Every value lockd stores in pebble (cluster record, hard states, log
// records) is sealed: the record, then the CRC-32C of the key and the record
// (4 bytes, little-endian). pebble checksums its own blocks, but a record can
// still come back wrong from outside pebble's view (a bug, a restore of a
// mixed-up copy, a record written under another key); the seal catches those
// on every read, and names the key.
const sumLen = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordSum is the checksum of a record stored under key.
func recordSum(key, rec []byte) uint32 {
	return crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, rec)
}

// seal appends the checksum of rec, stored under key, to rec, which must be
// the tail of dst (dst = append(dst, rec...)).
func seal(dst []byte, key []byte, recStart int) []byte {
	return binary.LittleEndian.AppendUint32(dst, recordSum(key, dst[recStart:]))
}

// unseal checks the checksum of a stored value and returns the record in it
// (sharing v's memory). The error wraps ErrDamaged.
func unseal(key, v []byte) ([]byte, error) {
	if len(v) < sumLen {
		return nil, fmt.Errorf("%w: record under key %x has %d bytes, too short to hold its checksum", ErrChecksum, key, len(v))
	}
	rec := v[:len(v)-sumLen]
	want := binary.LittleEndian.Uint32(v[len(v)-sumLen:])
	if got := recordSum(key, rec); got != want {
		return nil, fmt.Errorf("%w: record under key %x (%d bytes): stored CRC-32C %08x, computed %08x", ErrChecksum, key, len(rec), want, got)
	}
	return rec, nil
}
