package paxos

import (
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

var (
	simSeeds = flag.Int("sim.seeds", 2000, "number of seeds TestSimulation runs")
	simStart = flag.Int64("sim.start", 1, "first seed TestSimulation runs")
	simSeed  = flag.Int64("sim.seed", 0, "run only this seed (a failing run prints it)")
	simTrace = flag.Bool("sim.trace", false, "with -sim.seed: log every message, write and crash")
	simOnly  = flag.String("sim.config", "", "run only the configuration with this name")
)

func simConfigFor(seed int64) simConfig {
	return simConfigs[int(seed%int64(len(simConfigs)))]
}

func replayCommand(seed int64) string {
	return fmt.Sprintf("go test ./paxos -run 'TestSimulation$' -sim.seed=%d -v", seed)
}

// TestSimulation runs the deterministic simulator (F7, F6) over many seeds:
// loss, duplication, delay, reordering, one-way partitions, crashes that lose
// unsynced state, restarts, and proposers on every node. Agreement, in-order
// application, own-value success and exactly-once are checked after every
// step; liveness once the faults stop.
func TestSimulation(t *testing.T) {
	if *simSeed != 0 {
		cfg := simConfigFor(*simSeed)
		s := newSim(*simSeed, cfg)
		if *simTrace {
			s.trace = func(line string) { t.Log(line) }
		}
		err := s.run()
		t.Logf("seed %d config %s: %d steps, %d proposals, %d successes, %d snapshots installed, %d membership changes proposed, %d chosen", *simSeed, cfg.name, s.steps, s.check.proposals, s.check.successes, s.check.installed, s.check.changes, s.check.truth.changeCount())
		if err != nil {
			t.Fatalf("seed %d (%s): %v\nreplay: %s", *simSeed, cfg.name, err, replayCommand(*simSeed))
		}
		return
	}
	seeds := *simSeeds
	if testing.Short() && seeds > 200 {
		seeds = 200
	}
	var next atomic.Int64
	next.Store(*simStart)
	var mu sync.Mutex
	var failures []string
	var successes, runs, installs, announced, changes, chosenChanges atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seed := next.Add(1) - 1
				if seed >= *simStart+int64(seeds) {
					return
				}
				cfg := simConfigFor(seed)
				if *simOnly != "" && cfg.name != *simOnly {
					continue
				}
				s := newSim(seed, cfg)
				err := s.run()
				runs.Add(1)
				successes.Add(int64(s.check.successes))
				installs.Add(int64(s.check.installed))
				announced.Add(int64(s.check.truth.announced))
				changes.Add(int64(s.check.changes))
				chosenChanges.Add(int64(s.check.truth.changeCount()))
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("seed %d (%s): %v\n  replay: %s", seed, cfg.name, err, replayCommand(seed)))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d seeds from %d over %d configurations, %d proposals succeeded, %d snapshots installed, commit rule checked for %d slots, %d membership changes proposed, %d chosen",
		runs.Load(), *simStart, len(simConfigs), successes.Load(), installs.Load(), announced.Load(), changes.Load(), chosenChanges.Load())
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... and %d more failures", len(failures)-10)
			break
		}
		t.Error(f)
	}
}
