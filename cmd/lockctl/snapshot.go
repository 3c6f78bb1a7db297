package main

import (
	"strconv"

	"github.com/urfave/cli/v2"
)

func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "back up the cluster (snapshot save FILE); lockd restore seeds a new cluster from it",
		Subcommands: []*cli.Command{{
			Name:      "save",
			Usage:     "write a snapshot of every group to FILE",
			ArgsUsage: "FILE",
			Description: "Asks each group's master for a snapshot of the group (every lock, session and waiter, and the fencing-token counter) " +
				"at a slot that holds every command acknowledged before, reads it in checksummed chunks and writes all groups to FILE " +
				"(written as FILE.part, then renamed: FILE is a whole backup or is left as it was). " +
				"Needs an identity with the admin role (an access rule granting \"admin\" on the prefix \"\"; README, Security). " +
				"Restore it into a new cluster with lockd restore --from FILE (README, Operations).",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usageErrorf("want the backup file: lockctl snapshot save FILE")
				}
				ctx, cl, done, err := dialOp(c)
				if err != nil {
					return err
				}
				defer done()
				info, err := cl.SaveSnapshot(ctx, c.Args().First())
				if err != nil {
					return err
				}
				p := newPrinter(c)
				if p.json {
					return p.object(info)
				}
				rows := make([][]string, 0, len(info.Groups))
				for _, g := range info.Groups {
					rows = append(rows, []string{strconv.FormatUint(uint64(g.Group), 10), u64(g.Slot), strconv.FormatInt(g.Bytes, 10), strconv.FormatUint(uint64(g.Node), 10)})
				}
				if err := p.table([]string{"GROUP", "SLOT", "BYTES", "FROM NODE"}, rows); err != nil {
					return err
				}
				p.linef("saved %d groups of cluster %q to %s (%d bytes)", len(info.Groups), info.ClusterID, info.Path, info.Bytes)
				return nil
			},
		}},
	}
}
