package bench

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sampleResult(label string, scale time.Duration) *Result {
	r := &Result{Workload: Uncontended, Label: label, Clients: 4, Errors: map[string]uint64{}, Extra: map[string]float64{}}
	for i := 1; i <= 1000; i++ {
		r.Hist.Record(time.Duration(i) * scale)
	}
	r.Ops = r.Hist.Count()
	r.Seconds = 2
	r.finish()
	return r
}

func TestResultSummary(t *testing.T) {
	r := sampleResult("a", time.Microsecond)
	if r.OpsPerSec != 500 {
		t.Errorf("ops/s %v, want 500", r.OpsPerSec)
	}
	if r.LatencyMS.P50 < 0.5 || r.LatencyMS.P50 > 0.51 || r.LatencyMS.Max != 1 {
		t.Errorf("latency %+v", r.LatencyMS)
	}
}

// TestWriteTable checks that the table has a header, one row per result,
// and the errors and extra figures below it.
func TestWriteTable(t *testing.T) {
	r := sampleResult("groups=1 W=1", time.Microsecond)
	r.Errors["timeout"] = 2
	r.ErrorSamples = map[string]string{"timeout": "context deadline exceeded"}
	r.Extra["served_again_s"] = 2.5
	var b bytes.Buffer
	if err := WriteTable(&b, []*Result{r, sampleResult("", time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"ops/s", "p99.9 ms", "groups=1 W=1", "500", "error timeout", "context deadline exceeded", "served_again_s", "2.5"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Count(out, "uncontended"); lines < 3 {
		t.Errorf("want 2 rows and an error block, got %d mentions:\n%s", lines, out)
	}
}

// TestWriteJSON checks the JSON document scripts read.
func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, []*Result{sampleResult("x", time.Microsecond)}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Results []struct {
			Workload  string             `json:"workload"`
			Label     string             `json:"label"`
			OpsPerSec float64            `json:"ops_per_sec"`
			Latency   map[string]float64 `json:"latency_ms"`
			Errors    map[string]uint64  `json:"errors"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if len(doc.Results) != 1 || doc.Results[0].Label != "x" || doc.Results[0].OpsPerSec != 500 {
		t.Fatalf("decoded %+v", doc)
	}
	for _, k := range []string{"p50", "p90", "p99", "p99_9", "max", "mean"} {
		if _, ok := doc.Results[0].Latency[k]; !ok {
			t.Errorf("latency_ms lacks %s", k)
		}
	}
}

// TestWriteCSV checks the histogram file: a header, buckets in order whose
// counts add up to the ops, and a cumulative fraction that ends at 1.
func TestWriteCSV(t *testing.T) {
	r := sampleResult("x", time.Microsecond)
	var b bytes.Buffer
	if err := WriteCSV(&b, []*Result{r}); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != "workload,config,lo_us,hi_us,count,cumulative" {
		t.Fatalf("header %v", rows[0])
	}
	var total uint64
	prev := -1.0
	for _, row := range rows[1:] {
		lo, _ := strconv.ParseFloat(row[2], 64)
		if lo <= prev {
			t.Fatalf("buckets out of order at %v", row)
		}
		prev = lo
		n, _ := strconv.ParseUint(row[4], 10, 64)
		total += n
	}
	if total != r.Ops {
		t.Errorf("counts add to %d, want %d", total, r.Ops)
	}
	if last := rows[len(rows)-1][5]; last != "1.000000" {
		t.Errorf("cumulative ends at %s", last)
	}
}

// TestMedian checks that repeated runs summarize to per-figure medians
// with summed errors.
func TestMedian(t *testing.T) {
	a, b, c := sampleResult("x", time.Microsecond), sampleResult("x", 2*time.Microsecond), sampleResult("x", 3*time.Microsecond)
	a.OpsPerSec, b.OpsPerSec, c.OpsPerSec = 100, 300, 200
	a.Errors["timeout"], c.Errors["timeout"] = 1, 2
	a.Extra["x"], b.Extra["x"], c.Extra["x"] = 1, 5, 3
	m := Median([]*Result{a, b, c})
	if m.OpsPerSec != 200 || m.Runs != 3 || m.Errors["timeout"] != 3 || m.Extra["x"] != 3 {
		t.Fatalf("median %+v", m)
	}
	if m.LatencyMS.P50 != b.LatencyMS.P50 {
		t.Errorf("p50 %v, want the middle run's %v", m.LatencyMS.P50, b.LatencyMS.P50)
	}
	if m.Hist.Count() != 3000 {
		t.Errorf("merged histogram holds %d values", m.Hist.Count())
	}
}

func TestLists(t *testing.T) {
	if v, err := intList("1, 2,16"); err != nil || len(v) != 3 || v[2] != 16 {
		t.Errorf("intList: %v %v", v, err)
	}
	if _, err := intList("0"); err == nil {
		t.Error("intList accepts 0")
	}
	if v, err := durationList("0,30ms"); err != nil || v[1] != 30*time.Millisecond {
		t.Errorf("durationList: %v %v", v, err)
	}
	if _, err := durationList("30"); err == nil {
		t.Error("durationList accepts a number without unit")
	}
}
