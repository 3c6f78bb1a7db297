package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Latency is a latency summary in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Result is what one run measured.
type Result struct {
	Workload string `json:"workload"`
	// Label names the run's configuration among others of one invocation
	// ("groups=4 window=1"), or is empty.
	Label   string `json:"label,omitempty"`
	Groups  int    `json:"groups,omitempty"`
	Window  int    `json:"window,omitempty"`
	Clients int    `json:"clients"`
	Names   int    `json:"names,omitempty"`
	// Runs is how many runs a median result summarizes (0 or 1: one run).
	Runs int `json:"runs,omitempty"`
	// Ops completed in the measured window, which lasted Seconds.
	Ops       uint64  `json:"ops"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// LatencyMS summarizes the ops' latencies.
	LatencyMS Latency `json:"latency_ms"`
	// Errors counts failed ops by kind (see ErrorKind); ErrorSamples
	// keeps one message per kind.
	Errors       map[string]uint64 `json:"errors"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// Extra holds the workload's own figures (failover times, sessions
	// kept alive, CPU and memory), by name; units are in the names.
	Extra map[string]float64 `json:"extra,omitempty"`
	// Timeline counts the ops completed in each second of the window
	// (failover only, to show the dip and the recovery).
	Timeline []uint64 `json:"timeline_ops_per_s,omitempty"`
	// Hist is the latency histogram; WriteCSV writes it.
	Hist Histogram `json:"-"`
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// finish computes the summary fields from Ops, Seconds and Hist.
func (r *Result) finish() {
	if r.Seconds > 0 {
		r.OpsPerSec = float64(r.Ops) / r.Seconds
	}
	h := &r.Hist
	r.LatencyMS = Latency{P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Mean: ms(h.Mean())}
}

// Median summarizes repeated runs of one configuration: every figure is
// the median of that figure over the runs (so p99 is the median p99, not
// the p99 of all ops), errors are summed, and Hist holds every run's ops.
func Median(runs []*Result) *Result {
	if len(runs) == 0 {
		return nil
	}
	if len(runs) == 1 {
		return runs[0]
	}
	out := *runs[0]
	out.Runs = len(runs)
	out.Errors = map[string]uint64{}
	out.ErrorSamples = nil
	out.Extra = map[string]float64{}
	out.Hist = Histogram{}
	med := func(f func(*Result) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		return median(v)
	}
	out.Ops = uint64(med(func(r *Result) float64 { return float64(r.Ops) }))
	out.Seconds = med(func(r *Result) float64 { return r.Seconds })
	out.OpsPerSec = med(func(r *Result) float64 { return r.OpsPerSec })
	out.LatencyMS = Latency{
		P50:  med(func(r *Result) float64 { return r.LatencyMS.P50 }),
		P90:  med(func(r *Result) float64 { return r.LatencyMS.P90 }),
		P99:  med(func(r *Result) float64 { return r.LatencyMS.P99 }),
		P999: med(func(r *Result) float64 { return r.LatencyMS.P999 }),
		Max:  med(func(r *Result) float64 { return r.LatencyMS.Max }),
		Mean: med(func(r *Result) float64 { return r.LatencyMS.Mean }),
	}
	keys := map[string]bool{}
	for _, r := range runs {
		out.Hist.Merge(&r.Hist)
		for k, v := range r.Errors {
			out.Errors[k] += v
		}
		for k, v := range r.ErrorSamples {
			if out.ErrorSamples == nil {
				out.ErrorSamples = map[string]string{}
			}
			out.ErrorSamples[k] = v
		}
		for k := range r.Extra {
			keys[k] = true
		}
	}
	out.Timeline = nil
	if n := len(runs[0].Timeline); n > 0 {
		out.Timeline = make([]uint64, n)
		for i := range out.Timeline {
			v := make([]float64, 0, len(runs))
			for _, r := range runs {
				if i < len(r.Timeline) {
					v = append(v, float64(r.Timeline[i]))
				}
			}
			out.Timeline[i] = uint64(median(v))
		}
	}
	for k := range keys {
		var v []float64
		for _, r := range runs {
			if x, ok := r.Extra[k]; ok {
				v = append(v, x)
			}
		}
		out.Extra[k] = median(v)
	}
	return &out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// WriteTable writes results as a table for people: one row per result,
// then the errors and extra figures of each, when it has any.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{"workload", "config", "runs", "clients", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, r := range results {
		var errs uint64
		for _, v := range r.Errors {
			errs += v
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n",
			r.Workload, orDash(r.Label), max(r.Runs, 1), r.Clients, r.Ops, r.OpsPerSec,
			r.LatencyMS.P50, r.LatencyMS.P90, r.LatencyMS.P99, r.LatencyMS.P999, r.LatencyMS.Max, errs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if len(r.Errors) == 0 && len(r.Extra) == 0 && len(r.Timeline) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s %s:\n", r.Workload, orDash(r.Label))
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(w, "  error %-24s %d", k, r.Errors[k])
			if s := r.ErrorSamples[k]; s != "" {
				fmt.Fprintf(w, "  (e.g. %s)", truncate(s, 120))
			}
			fmt.Fprintln(w)
		}
		for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
			fmt.Fprintf(w, "  %-30s %s\n", k, strconv.FormatFloat(r.Extra[k], 'f', -1, 64))
		}
		if len(r.Timeline) > 0 {
			fmt.Fprintf(w, "  %-30s %v\n", "ops per second of the window", r.Timeline)
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// WriteJSON writes results as one JSON document: {"results": [...]}.
func WriteJSON(w io.Writer, results []*Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Results []*Result `json:"results"`
	}{results})
}

// WriteCSV writes the latency histograms: one row per non-empty bucket,
// with its bounds in microseconds, its count, and the fraction of the ops
// at or below it.
func WriteCSV(w io.Writer, results []*Result) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"workload", "config", "lo_us", "hi_us", "count", "cumulative"})
	for _, r := range results {
		var seen uint64
		for _, b := range r.Hist.Buckets() {
			seen += b.Count
			cw.Write([]string{r.Workload, r.Label,
				strconv.FormatFloat(float64(b.Lo)/1e3, 'f', 3, 64),
				strconv.FormatFloat(float64(b.Hi)/1e3, 'f', 3, 64),
				strconv.FormatUint(b.Count, 10),
				strconv.FormatFloat(float64(seen)/float64(r.Hist.Count()), 'f', 6, 64)})
		}
	}
	cw.Flush()
	return cw.Error()
}
