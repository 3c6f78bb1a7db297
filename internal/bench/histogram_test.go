package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestBucketsCoverEveryValue checks that buckets are contiguous, ordered and
// narrow: every value lands in a bucket whose bounds hold it, and a bucket
// spans at most 1/64 of its lower bound.
func TestBucketsCoverEveryValue(t *testing.T) {
	prevHi := uint64(0)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketBounds(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if hi < lo {
			t.Fatalf("bucket %d: hi %d < lo %d", i, hi, lo)
		}
		if lo >= subCount && float64(hi-lo+1) > float64(lo)/subHalf {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/%d of its start", i, lo, hi, subHalf)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prevHi = hi
		if hi == ^uint64(0) {
			if i != numBuckets-1 {
				t.Fatalf("bucket %d reaches the top, but there are %d buckets", i, numBuckets)
			}
		}
	}
	if prevHi != ^uint64(0) {
		t.Fatalf("the last bucket ends at %d, not at the largest uint64", prevHi)
	}
}

// TestQuantilesMatchSortedValues compares quantiles with exact ones from a
// sorted sample: each is at or above the exact value and within 1.6%.
func TestQuantilesMatchSortedValues(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]time.Duration, 100000)
	for i := range vals {
		// Log-uniform from 1µs to 1s, like latencies.
		v := time.Duration(float64(time.Microsecond) * math.Pow(1e6, r.Float64()))
		vals[i] = v
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := int(math.Ceil(q * float64(len(vals))))
		exact := vals[max(rank, 1)-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/64 {
			t.Errorf("q%v: got %v, exact %v", q, got, exact)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Min() != vals[0] {
		t.Errorf("min/max %v/%v, want %v/%v", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
	if h.Count() != uint64(len(vals)) {
		t.Errorf("count %d", h.Count())
	}
}

// TestMergeEqualsRecordingTogether checks that merged per-worker histograms
// answer as one histogram fed with every value.
func TestMergeEqualsRecordingTogether(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Millisecond
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		all.Record(d)
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	if m != all {
		t.Fatal("merged histogram differs from one recorded together")
	}
	if got := m.Quantile(0.5); got < 500*time.Millisecond || got > 508*time.Millisecond {
		t.Errorf("p50 %v, want 500ms within 1.6%%", got)
	}
	if m.Mean() != 500500*time.Microsecond {
		t.Errorf("mean %v", m.Mean())
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Mean() != 0 || h.Max() != 0 || len(h.Buckets()) != 0 {
		t.Fatal("an empty histogram reports values")
	}
	h.Record(-time.Second)
	if h.Max() != 0 || h.Count() != 1 {
		t.Fatal("a negative duration is not recorded as zero")
	}
}
