package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/lockd/lockd/internal/backup"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
	"github.com/urfave/cli/v2"
)

const restoreDescription = `Seeds the data dir of one node of a NEW cluster from a backup that
lockctl snapshot save wrote (like etcdctl snapshot restore). Run it once for
each node, with the same --from and --groups, then start the nodes with
lockd run as usual (the same --groups; --cluster defaults to the backup's
cluster name here and must be given to lockd run too if it is not "lockd").

The restored cluster has the backup's sessions, locks, waiters and limits.
Sessions get a full TTL from when the new cluster serves them: clients that
reconnect in time keep their locks. Fencing tokens go on strictly above any
token the old cluster handed out, even after the backup was taken: the
first master of each group raises the token floor to its clock (in
microseconds) before it grants anything (README, Operations).

The whole backup is checked (lengths and checksums of every part) before
anything is written; a damaged file, a data dir that is not empty, or a
group count that differs from the backup's is refused and changes nothing.`

// exitBadBackup is lockd restore's exit code for a backup file that is
// damaged, cut short, or not a lockd backup.
const exitBadBackup = 7

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:        "restore",
		Usage:       "seed a new node's data dir from a backup (lockctl snapshot save)",
		UsageText:   "lockd restore --from FILE --data-dir DIR --id N [--groups G] [--cluster NAME]",
		Description: restoreDescription,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the backup `FILE` (lockctl snapshot save)", EnvVars: []string{"LOCKD_RESTORE_FROM"}},
			&cli.StringFlag{Name: "data-dir", Usage: "the new node's data dir `DIR`: missing or empty", EnvVars: []string{"LOCKD_DATA_DIR"}},
			&cli.UintFlag{Name: "id", Aliases: []string{"node-id"}, Usage: "the new node's id `N` (as lockd run --id)", EnvVars: []string{"LOCKD_ID"}},
			&cli.IntFlag{Name: "groups", Usage: "number of Paxos groups: must be the backup's", Value: 16, EnvVars: []string{"LOCKD_GROUPS"}},
			&cli.StringFlag{Name: "cluster", Usage: "cluster name recorded in the data dir (default: the backup's)", EnvVars: []string{"LOCKD_CLUSTER"}},
		},
		Action: restoreNode,
	}
}

func restoreNode(c *cli.Context) error {
	if c.Args().Present() {
		return usageErrorf("restore takes no arguments, got %q (flags go before it?)", c.Args().First())
	}
	from, dir := c.String("from"), c.String("data-dir")
	id := c.Uint("id")
	switch {
	case from == "":
		return usageErrorf("--from FILE is required: the backup lockctl snapshot save wrote")
	case dir == "":
		return usageErrorf("--data-dir DIR is required: the new node's data dir, missing or empty")
	case id == 0 || id > 1<<32-1:
		return usageErrorf("--id N is required: the new node's id, as lockd run --id")
	case c.Int("groups") < 1 || c.Int("groups") > backup.MaxGroups:
		return usageErrorf("--groups %d: want 1 to %d", c.Int("groups"), backup.MaxGroups)
	}
	cluster := ""
	if c.IsSet("cluster") {
		cluster = c.String("cluster")
	}
	rep, err := server.Restore(c.Context, server.RestoreConfig{
		From: from, DataDir: dir, NodeID: paxos.NodeID(id), Groups: c.Int("groups"), ClusterID: cluster,
	})
	switch {
	case err == nil:
	case errors.Is(err, backup.ErrBadBackup):
		return withCode(exitBadBackup, fmt.Errorf("%w: nothing was written to %s", err, dir))
	case errors.Is(err, server.ErrRestoreNotEmpty), errors.Is(err, server.ErrRestoreMismatch):
		return withCode(exitSetup, err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return withCode(exitSetup, fmt.Errorf("cannot read the backup or write the data dir: %w", err))
	default:
		return withCode(exitFailed, err)
	}
	fmt.Fprintf(c.App.Writer, "restored node %d into %s from %s: cluster %q, %d groups, %d sessions, %d locks, largest token %d, backup taken %s\n",
		id, dir, from, rep.ClusterID, rep.Groups, rep.Sessions, rep.Locks, rep.MaxToken, rep.Created.Format("2006-01-02T15:04:05Z"))
	fmt.Fprintf(c.App.Writer, "start it with: lockd run --id %d --data-dir %s --groups %d --cluster %s --peers ... --certs ...\n", id, dir, rep.Groups, rep.ClusterID)
	return nil
}
