package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// printer writes results: aligned tables and sentences for people, or with
// --json one JSON object per line.
type printer struct {
	w    io.Writer
	json bool
}

func newPrinter(c *cli.Context) printer { return printer{w: c.App.Writer, json: c.Bool("json")} }

// object writes v as one line of JSON.
func (p printer) object(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.w, "%s\n", b)
	return err
}

// table writes rows under header, aligned.
func (p printer) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// linef writes one line for people.
func (p printer) linef(format string, args ...any) {
	fmt.Fprintf(p.w, format+"\n", args...)
}

// lockedWriter makes w safe for lockctl and CMD to write at once: CMD's
// output is copied by a goroutine of os/exec unless w is a file, which CMD
// then writes directly.
func lockedWriter(w io.Writer) io.Writer {
	if _, ok := w.(*os.File); ok {
		return w
	}
	return &syncWriter{w: w}
}

type syncWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
