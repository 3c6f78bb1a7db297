package main

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/internal/bench"
)

// benchCommand is `lockctl bench`: the workloads, the local cluster and the
// output live in internal/bench; this maps its exit codes onto lockctl's.
// It reads --endpoints, --ca, --cert, --key, --config and --json from
// lockctl's global flags.
func benchCommand() *cli.Command {
	cmd := bench.Command()
	action := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		err := action(c)
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			return &exitErr{code: ec.ExitCode(), err: errors.New(ec.Error())}
		}
		return err
	}
	return cmd
}
