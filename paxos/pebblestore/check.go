package pebblestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/lockd/lockd/paxos"
)

// Report is what Verify found in an intact data dir.
type Report struct {
	// Fresh is true for a data dir with no lockd state yet.
	Fresh bool
	// Groups is the number of groups with a hard state; Entries the log
	// records read.
	Groups  int
	Entries int
}

// groupScan is what Verify saw of one group.
type groupScan struct {
	hard    paxos.HardState
	hasHard bool
	slots   []uint64 // of the log records, in order
}

// Verify reads every record of the data dir and checks it against the
// state file; it is meant to run once, at start, before the store serves.
// Any error it returns wraps ErrDamaged, except for errors that say nothing
// about the data (a closed store). See the package doc for what it catches
// and why.
func (s *Store) Verify() (Report, error) {
	if s.closed.Load() {
		return Report{}, ErrClosed
	}
	s.hwmMu.Lock()
	file, haveFile := s.hwm.file, s.hwm.active
	s.hwmMu.Unlock()
	_, haveMeta, err := s.LoadMeta()
	if err != nil {
		return Report{}, damaged(err)
	}
	used, err := s.hasPaxosState()
	if err != nil {
		return Report{}, damaged(err)
	}
	switch {
	case !haveFile && !haveMeta && !used:
		return Report{Fresh: true}, nil
	case !haveFile:
		return Report{}, fmt.Errorf("%w: %s holds lockd state but no %s file (it was deleted, or the dir was written by a lockd without it), so lost records cannot be ruled out",
			ErrDamaged, s.dir, StateFile)
	case !haveMeta && !used:
		if g, m, ok := firstMark(&file); ok {
			return Report{}, fmt.Errorf("%w: pebble holds nothing in %s, but %s says group %d promised ballot %s and committed %d slots: pebble lost synced records (its WAL or MANIFEST was truncated, damaged or deleted)",
				ErrDamaged, s.dir, StateFile, g, m.promised, m.commit)
		}
		// Stamping was cut short before anything was promised: a new dir.
		return Report{Fresh: true}, nil
	case !haveMeta:
		return Report{}, fmt.Errorf("%w: %s holds Paxos state but pebble lost its cluster record: pebble lost synced records (WAL or MANIFEST damaged)", ErrDamaged, s.dir)
	}

	scans := map[paxos.GroupID]*groupScan{}
	scan := func(g paxos.GroupID) *groupScan {
		if gs := scans[g]; gs != nil {
			return gs
		}
		gs := &groupScan{}
		scans[g] = gs
		return gs
	}
	rep := Report{}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return Report{}, damaged(err)
	}
	var problems []string
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return Report{}, damaged(fmt.Errorf("read key %x: %w", k, err))
		}
		switch {
		case len(k) == hardKeyLen && bytes.HasPrefix(k, []byte(hardPrefix)):
			g := paxos.GroupID(binary.BigEndian.Uint32(k[len(hardPrefix):]))
			rec, err := unseal(k, v)
			if err == nil {
				var hs paxos.HardState
				if hs, err = paxos.DecodeHardState(rec); err == nil {
					gs := scan(g)
					gs.hard, gs.hasHard = hs, true
					continue
				}
			}
			it.Close()
			return Report{}, damaged(fmt.Errorf("hard state of group %d: %w", g, err))
		case len(k) == logKeyLen && bytes.HasPrefix(k, []byte(logPrefix)):
			g := paxos.GroupID(binary.BigEndian.Uint32(k[len(logPrefix):]))
			slot, _ := parseLogKey(k, g)
			rec, err := unseal(k, v)
			if err == nil {
				_, err = paxos.DecodeEntryRecord(slot, rec, s.lim)
			}
			if err != nil {
				it.Close()
				return Report{}, damaged(fmt.Errorf("group %d slot %d: %w", g, slot, err))
			}
			gs := scan(g)
			gs.slots = append(gs.slots, slot)
			rep.Entries++
		default:
			// The cluster record was checked above; keys of other kinds
			// (added by later versions) are read, so their blocks'
			// checksums are checked, and left alone.
		}
	}
	if err := it.Close(); err != nil {
		return Report{}, damaged(err)
	}
	groups := len(file.marks)
	for g := range scans {
		groups = max(groups, int(g)+1)
	}
	for g := range groups {
		gs := scans[paxos.GroupID(g)]
		if gs == nil {
			gs = &groupScan{}
		}
		if gs.hasHard {
			rep.Groups++
		}
		m := fileMark(&file, g)
		hs := gs.hard
		if hs.Promised.Less(m.promised) {
			problems = append(problems, fmt.Sprintf("group %d: promised ballot %s, below the %s that %s recorded", g, hs.Promised, m.promised, StateFile))
		}
		if hs.Commit < m.commit {
			problems = append(problems, fmt.Sprintf("group %d: commit index %d, below the %d that %s recorded", g, hs.Commit, m.commit, StateFile))
		}
		// Every slot from the floor up to the commit index must be there.
		floor, commit := m.floor, max(hs.Commit, m.commit)
		have := uint64(0)
		for _, sl := range gs.slots {
			if sl >= floor && sl < commit {
				have++
			}
		}
		if commit > floor && have < commit-floor {
			problems = append(problems, fmt.Sprintf("group %d: %d of the %d chosen log entries from slot %d to %d are missing", g, commit-floor-have, commit-floor, floor, commit-1))
		}
	}
	if len(problems) > 0 {
		const show = 4
		more := ""
		if len(problems) > show {
			more = fmt.Sprintf("; and %d more", len(problems)-show)
			problems = problems[:show]
		}
		return Report{}, fmt.Errorf("%w: pebble opened %s but lost synced records (a damaged or truncated WAL or MANIFEST, or missing sstables): %s%s",
			ErrDamaged, s.dir, strings.Join(problems, "; "), more)
	}
	return rep, nil
}

func firstMark(f *stateFile) (int, mark, bool) {
	for g, m := range f.marks {
		if m != (mark{}) {
			return g, m, true
		}
	}
	return 0, mark{}, false
}

// damaged wraps a read failure during Verify as damage: at start, a record
// or block that cannot be read means the data dir cannot be trusted.
func damaged(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrDamaged) {
		return err
	}
	what := "reading it failed"
	if pebble.IsCorruptionError(err) {
		what = "pebble found corruption (a block failed its checksum or a file is missing)"
	}
	return fmt.Errorf("%w: %s: %w", ErrDamaged, what, err)
}
