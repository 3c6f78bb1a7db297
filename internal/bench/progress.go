package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// IsTerminal reports whether f is a terminal (a character device), where a
// progress bar redrawn in place makes sense.
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

const barWidth = 30

// startProgress draws a bar of the run's time on o.Progress every 200ms
// until the returned function is called, which erases it.
func startProgress(o *Options, win *window, label string) func() {
	return drawLoop(o.Progress, func(now time.Time) string {
		total := win.end.Sub(win.start)
		phase := "warm-up"
		var frac float64
		var rate float64
		if now.After(win.start) {
			phase = "measure"
			el := now.Sub(win.start)
			if total > 0 {
				frac = min(float64(el)/float64(total), 1)
			}
			if el > 0 {
				rate = float64(win.ops.Load()) / el.Seconds()
			}
		}
		left := max(win.end.Sub(now), 0).Round(time.Second)
		return fmt.Sprintf("%-12s %s %s %3.0f%% %s left, %d ops, %.0f ops/s", label, phase, bar(frac), 100*frac, left, win.ops.Load(), rate)
	})
}

// startProgressCount draws a bar of ops done out of total.
func startProgressCount(o *Options, win *window, label string, total uint64) func() {
	return drawLoop(o.Progress, func(now time.Time) string {
		done := win.ops.Load()
		frac := min(float64(done)/float64(max(total, 1)), 1)
		rate := float64(done) / max(now.Sub(win.start).Seconds(), 1e-3)
		return fmt.Sprintf("%s %s %d/%d, %.0f/s", label, bar(frac), done, total, rate)
	})
}

func bar(frac float64) string {
	n := int(frac * barWidth)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", barWidth-n) + "]"
}

func drawLoop(w io.Writer, line func(time.Time) string) func() {
	if w == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		width := 0
		for {
			select {
			case <-stop:
				fmt.Fprintf(w, "\r%s\r", strings.Repeat(" ", width))
				return
			case now := <-t.C:
				s := line(now)
				width = max(width, len(s))
				fmt.Fprintf(w, "\r%-*s", width, s)
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
