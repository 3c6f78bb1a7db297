package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// splitArgs prepares args for cli: it takes off the command to run (all
// after the first "--" that follows lockctl's command), and moves flags that
// follow the command's arguments in front of them, since cli, like Go's
// flag package, stops at the first argument. So "acquire NAME --ttl 30s --
// CMD" parses like "acquire --ttl 30s NAME", with CMD returned apart.
// dashdash reports whether "--" was there.
func splitArgs(app *cli.App, args []string) (out, cmd []string, dashdash bool) {
	if len(args) < 2 {
		return args, nil, false
	}
	out = []string{args[0]}
	i := 1
	bools := boolFlags(app.Flags)
	for i < len(args) && isFlag(args[i]) {
		out = append(out, args[i])
		if takesValue(args[i], bools) && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
		i++
	}
	if i >= len(args) || args[i] == "--" {
		return append(out, args[i:]...), nil, false
	}
	command := app.Command(args[i])
	if command == nil {
		return append(out, args[i:]...), nil, false
	}
	name := args[i]
	i++
	// lockctl's own flags (--timeout, --json, --config, ...) are accepted
	// after the command too, and go in front of it, where cli reads them;
	// a flag the command defines itself stays the command's.
	global := flagNames(app.Flags)
	for n := range flagNames(command.Flags) {
		delete(global, n)
	}
	for n := range boolFlags(command.Flags) {
		bools[n] = true
	}
	var flags, positional []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			cmd, dashdash = args[i+1:], true
			break
		}
		if isFlag(a) {
			n := strings.TrimLeft(a, "-")
			if k := strings.IndexByte(n, '='); k >= 0 {
				n = n[:k]
			}
			dst := &flags
			if global[n] {
				dst = &out
			}
			*dst = append(*dst, a)
			if takesValue(a, bools) && i+1 < len(args) && args[i+1] != "--" {
				i++
				*dst = append(*dst, args[i])
			}
			continue
		}
		positional = append(positional, a)
	}
	out = append(out, name)
	out = append(out, flags...)
	if len(positional) > 0 {
		// "--" keeps an argument that starts with "-" an argument.
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out, cmd, dashdash
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' && a != "--" }

// takesValue reports whether flag a is followed by its value: it is not a
// boolean flag and has no "=value" of its own.
func takesValue(a string, bools map[string]bool) bool {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	return !bools[name]
}

func boolFlags(flags []cli.Flag) map[string]bool {
	m := map[string]bool{"help": true, "h": true, "version": true, "v": true, "generate-bash-completion": true}
	for _, f := range flags {
		if _, ok := f.(*cli.BoolFlag); ok {
			for _, n := range f.Names() {
				m[n] = true
			}
		}
	}
	return m
}

// flagNames returns every name (and alias) of flags.
func flagNames(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		for _, n := range f.Names() {
			m[n] = true
		}
	}
	return m
}
