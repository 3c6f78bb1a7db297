// Command lockbench runs `lockctl bench` on its own, for machines and
// scripts that want the benchmark without the rest of lockctl. The flags
// are those of `lockctl bench`.
package main

import (
	"fmt"
	"os"

	"github.com/lockd/lockd/internal/bench"
	"github.com/urfave/cli/v2"
)

func main() {
	cmd := bench.Command()
	app := &cli.App{Name: "lockbench", Usage: cmd.Usage, ArgsUsage: cmd.ArgsUsage, Description: cmd.Description,
		Flags: append(bench.ClusterFlags(), cmd.Flags...), Action: cmd.Action, HideHelpCommand: true}
	if err := app.Run(workloadLast(os.Args)); err != nil {
		if ec, ok := err.(cli.ExitCoder); ok {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(os.Stderr, msg)
			}
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// workloadLast moves a workload named before the flags to the end, so that
// `lockbench uncontended --clients 16` works as well as the flags-first form.
func workloadLast(args []string) []string {
	for i, a := range args[1:] {
		for _, w := range bench.Workloads {
			if a == w {
				out := append([]string{args[0]}, args[1:i+1]...)
				out = append(out, args[i+2:]...)
				return append(out, a)
			}
		}
	}
	return args
}
