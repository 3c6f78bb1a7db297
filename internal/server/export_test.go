package server

import (
	"io"
	"log/slog"
)

// ProposeStats reads the propose-time histogram, for benchmarks.

func (m *metrics) ProposeStats() (float64, uint64) {
	mfs, _ := m.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "lockd_propose_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum(), h.GetSampleCount()
		}
	}
	return 0, 0
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
