package server

import (
	"errors"

	"github.com/lockd/lockd/paxos/pebblestore"
)

// noteDisk sets lockd_disk_full from the outcome of a synced write: 1 while
// writes are refused for a full disk (the replica waits and tries again),
// 0 once one goes through.
func (m *metrics) noteDisk(err error) {
	switch {
	case errors.Is(err, pebblestore.ErrDiskFull):
		m.diskFull.Set(1)
	case err == nil:
		m.diskFull.Set(0)
	}
}
