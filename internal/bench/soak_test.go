package bench

import (
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// The soak's accounting: time without a master counts from "no master" to
// the next master, inside the window only; a handover (a release and the
// lease of the node it names) is not a spontaneous change, a lapse is.
func TestMasterLogCountsNoMasterTimeAndSpontaneousChanges(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := newMasterLog(2)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	m.record(client.MasterEvent{Group: 0, Seq: 1, Node: 1, Cause: "lease"}, at(0))
	m.record(client.MasterEvent{Group: 1, Seq: 1, Node: 2, Cause: "lease"}, at(0))
	m.startAt(at(time.Second))
	// Group 0: handed over, 100ms without a master.
	m.record(client.MasterEvent{Group: 0, Seq: 2, Node: 0, Cause: "released"}, at(2*time.Second))
	m.record(client.MasterEvent{Group: 0, Seq: 3, Node: 2, Cause: "lease"}, at(2*time.Second+100*time.Millisecond))
	// Group 1: its lease runs out, another node takes over 2s later.
	m.record(client.MasterEvent{Group: 1, Seq: 1, Node: 0, Cause: "expired"}, at(3*time.Second))
	m.record(client.MasterEvent{Group: 1, Seq: 2, Node: 3, Cause: "lease"}, at(5*time.Second))
	r := &Result{Extra: map[string]float64{}}
	m.report(r, at(1*time.Second+time.Hour))
	want := map[string]float64{
		"no_master_ms_per_hour_g00": 100, "no_master_ms_per_hour_g01": 2000,
		"spontaneous_changes": 1, "handovers": 1, "lapses": 1, "resyncs": 0,
	}
	for k, v := range want {
		if r.Extra[k] != v {
			t.Errorf("%s = %v, want %v", k, r.Extra[k], v)
		}
	}
}
