package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

// printer writes results: aligned tables and sentences for people, or with
// --json one JSON object per line.
type printer struct {
	w    io.Writer
	json bool
}

func newPrinter(c *cli.Context) printer { return printer{w: c.App.Writer, json: c.Bool("json")} }

// event writes one streamed line of --json output: every such line has the
// same two fields first, "kind" (what happened) and "time" (when lockctl
// saw it, RFC 3339 with nanoseconds, UTC), then the fields of v, a struct or
// map that marshals to a JSON object.
func (p printer) event(kind string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	delete(fields, "kind")
	delete(fields, "time")
	out := []byte(`{"kind":`)
	k, _ := json.Marshal(kind)
	out = append(out, k...)
	out = append(out, `,"time":"`...)
	out = time.Now().UTC().AppendFormat(out, time.RFC3339Nano)
	out = append(out, '"')
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		nb, _ := json.Marshal(n)
		out = append(out, ',')
		out = append(out, nb...)
		out = append(out, ':')
		out = append(out, fields[n]...)
	}
	out = append(out, '}', '\n')
	_, err = p.w.Write(out)
	return err
}

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
