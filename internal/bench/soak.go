package bench

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"github.com/lockd/lockd/client"
)

// runSoak runs the uncontended workload on a local cluster while Burn
// processes (and BurnGoroutines goroutines of this process) keep the
// machine's CPUs busy, and follows every group's master with WatchMasters.
// Nothing is stopped or cut: every master change it sees is spontaneous,
// the machine merely busy. It reports, in Extra, how long each group was
// without a master per hour, the changes of master in the logs that no
// handover made ("spontaneous_changes": Seq steps after the warm-up, other
// than a release and the lease of the node it named), the handovers (a
// node that started late takes its groups back) and the leases that ran
// out ("lapses": a "no master" by expiry, which includes a master that
// renewed too late and came back).
func runSoak(ctx context.Context, o *Options, r *Result) error {
	stopBurn, err := burn(o.Burn, o.BurnGoroutines)
	if err != nil {
		return err
	}
	defer stopBurn()
	r.Extra["burn_processes"] = float64(o.Burn)
	r.Extra["burn_goroutines"] = float64(o.BurnGoroutines)

	c, err := newClient(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.WatchMasters(wctx)
	if err != nil {
		return fmt.Errorf("bench: soak: watch masters: %w", err)
	}
	groups := o.Cluster.Groups()
	m := newMasterLog(groups)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range events {
			m.record(ev, time.Now())
		}
	}()

	workers, err := startPairWorkers(ctx, o, r)
	if err != nil {
		return err
	}
	defer closeWorkers(workers)
	win := newWindow(o)
	m.startAt(win.start)
	var loadSum float64
	var loadN int
	sampleLoad := make(chan struct{})
	go func() {
		defer close(sampleLoad)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if la, ok := loadAverage(); ok && time.Now().After(win.start) {
					loadSum += la
					loadN++
				}
			case <-wctx.Done():
				return
			}
		}
	}()
	measureServer(o, r, func() { loop(ctx, o, workers, win, r) })
	end := time.Now()
	cancel()
	wg.Wait()
	<-sampleLoad
	if loadN > 0 {
		r.Extra["loadavg_1m_mean"] = loadSum / float64(loadN)
	}
	m.report(r, end)
	return nil
}

// burn starts n processes and g goroutines that spin on the CPU until the
// returned function is called.
func burn(n, g int) (func(), error) {
	done := make(chan struct{})
	for range g {
		go func() {
			x := 0
			for {
				select {
				case <-done:
					return
				default:
				}
				for i := range 1 << 16 {
					x += i
				}
				runtime.KeepAlive(x)
			}
		}()
	}
	var cmds []*exec.Cmd
	stop := func() {
		close(done)
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	for range n {
		c := exec.Command("/bin/sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("bench: soak: start a CPU burner: %w", err)
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}

// masterLog follows each group's master from a WatchMasters stream.
type masterLog struct {
	mu        sync.Mutex
	start     time.Time
	node      []uint32    // by group: the master now (0: none)
	seq       []uint64    // by group: Seq at the start of the window
	since     []time.Time // by group: when it lost its master, if it has none
	none      []time.Duration
	cause     []string // by group: the cause of the last event
	changes   []int    // by group: changes of master not by a handover
	handovers []int
	lapses    []int
	resyncs   int
}

func newMasterLog(groups int) *masterLog {
	return &masterLog{node: make([]uint32, groups), seq: make([]uint64, groups), since: make([]time.Time, groups),
		none: make([]time.Duration, groups), changes: make([]int, groups), lapses: make([]int, groups),
		cause: make([]string, groups), handovers: make([]int, groups)}
}

func (m *masterLog) startAt(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.start = t
}

// record takes in one event that arrived at now. Only what happens in the
// window (after the warm-up) counts.
func (m *masterLog) record(ev client.MasterEvent, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := int(ev.Group)
	if g >= len(m.node) {
		return
	}
	counting := !m.start.IsZero() && now.After(m.start)
	if counting {
		switch {
		case ev.Seq <= m.seq[g]:
		case ev.Cause == "released":
			m.handovers[g]++
		case ev.Cause == "lease" && m.cause[g] == "released" && ev.Seq == m.seq[g]+1:
			// The node a release named took over: the handover's end.
		default:
			m.changes[g] += int(ev.Seq - m.seq[g])
		}
		if ev.Node == 0 && ev.Cause == "expired" {
			m.lapses[g]++
		}
		if ev.Resync {
			m.resyncs++
		}
	}
	m.seq[g], m.cause[g] = ev.Seq, ev.Cause
	was := m.node[g]
	m.node[g] = ev.Node
	switch {
	case was != 0 && ev.Node == 0:
		m.since[g] = now
	case was == 0 && ev.Node != 0 && !m.since[g].IsZero():
		m.none[g] += m.window(m.since[g], now)
		m.since[g] = time.Time{}
	}
}

// window is the part of [from, to] after the start.
func (m *masterLog) window(from, to time.Time) time.Duration {
	if m.start.IsZero() || to.Before(m.start) {
		return 0
	}
	if from.Before(m.start) {
		from = m.start
	}
	return to.Sub(from)
}

func (m *masterLog) report(r *Result, end time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hours := end.Sub(m.start).Hours()
	if hours <= 0 {
		return
	}
	var total, worst time.Duration
	changes, lapses, handovers := 0, 0, 0
	for g := range m.node {
		none := m.none[g]
		if !m.since[g].IsZero() {
			none += m.window(m.since[g], end)
		}
		total += none
		worst = max(worst, none)
		changes += m.changes[g]
		lapses += m.lapses[g]
		handovers += m.handovers[g]
		r.Extra[fmt.Sprintf("no_master_ms_per_hour_g%02d", g)] = float64(none.Milliseconds()) / hours
	}
	r.Extra["no_master_ms_per_group_hour_mean"] = float64(total.Milliseconds()) / float64(len(m.node)) / hours
	r.Extra["no_master_ms_per_group_hour_max"] = float64(worst.Milliseconds()) / hours
	r.Extra["spontaneous_changes"] = float64(changes)
	r.Extra["lapses"] = float64(lapses)
	r.Extra["handovers"] = float64(handovers)
	r.Extra["resyncs"] = float64(m.resyncs)
	r.Extra["soak_minutes"] = end.Sub(m.start).Minutes()
}
