package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/urfave/cli/v2"
)

// defaultMemberTimeout bounds members add, remove and replace without
// --timeout: a new node may need minutes to catch up on a large snapshot.
const defaultMemberTimeout = 5 * time.Minute

const membersDescription = "Without a subcommand: the nodes of the cluster as one node sees them (any identity). " +
	"The subcommands read and change the membership of every Paxos group, through each group's master, " +
	"and need an identity with the admin role (an access rule granting \"admin\" on the prefix \"\"; README, Security); " +
	"without it they exit with 6.\n\n" +
	"A change is a command in each group's log, one at a time per group, and comes into force some slots after it is chosen. " +
	"add, remove and replace are idempotent: each step reads the group first and skips what is done, so when one is " +
	"interrupted (--timeout, ^C, a failover), running it again finishes the job. " +
	"A step refused because another change is in progress is retried with backoff until --timeout (default 5m for these commands). " +
	"Replacing a node (README, Operations): start the new node with lockd run --id NEW --join --peers ..., then lockctl members replace OLD NEW ADDR.\n\n" +
	"Exit codes: 0 done in every group; 3 the cluster is unreachable; 4 --timeout ran out before every change was in force " +
	"(run the command again to finish); 6 permission denied; 1 a group refused the change (the message says why)."

func membersCommand() *cli.Command {
	return &cli.Command{
		Name:        "members",
		Usage:       "list the nodes of the cluster; list, add, remove or replace the members of every group",
		Description: membersDescription,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf("unknown members subcommand %q: want list, add, remove or replace (lockctl members --help)", c.Args().First())
			}
			ctx, cl, done, err := dialOp(c)
			if err != nil {
				return err
			}
			defer done()
			st, err := cl.ClusterStatus(ctx)
			if err != nil {
				return err
			}
			p := newPrinter(c)
			if !p.json {
				return printMembers(p, st)
			}
			for _, m := range st.Members {
				if err := p.object(m); err != nil {
					return err
				}
			}
			return nil
		},
		Subcommands: []*cli.Command{membersListCommand(), membersAddCommand(), membersRemoveCommand(), membersReplaceCommand()},
	}
}

func membersListCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "show every group's members (voters and learners), how far each has caught up, and whether a change is pending",
		Description: "Asks each group's master. --json prints one object per group: group, master, commit, from (the first slot the newest " +
			"configuration governs), pending (not yet in force), and members (id, addr, voter, progress, up).",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("members list takes no arguments")
			}
			ctx, cl, done, err := dialOp(c)
			if err != nil {
				return err
			}
			defer done()
			gms, err := cl.Members(ctx)
			if err != nil {
				return err
			}
			p := newPrinter(c)
			if p.json {
				for _, gm := range gms {
					if err := p.object(gm); err != nil {
						return err
					}
				}
				return nil
			}
			rows := make([][]string, 0, len(gms))
			for _, gm := range gms {
				var voters, learners []string
				for _, m := range gm.Members {
					s := strconv.FormatUint(uint64(m.ID), 10)
					if !m.Up {
						s += "(down)"
					}
					if m.Voter {
						voters = append(voters, s)
					} else {
						learners = append(learners, fmt.Sprintf("%s@%d", s, m.Progress))
					}
				}
				state := "in force"
				if gm.Pending {
					state = fmt.Sprintf("pending until slot %d", gm.From)
				}
				rows = append(rows, []string{strconv.FormatUint(uint64(gm.Group), 10), strconv.FormatUint(uint64(gm.Master), 10),
					u64(gm.Commit), strings.Join(voters, " "), dash(strings.Join(learners, " ")), state})
			}
			return p.table([]string{"GROUP", "MASTER", "COMMIT", "VOTERS", "LEARNERS (AT SLOT)", "CHANGE"}, rows)
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func membersAddCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "add node ID at ADDR to every group: as a learner, then, once caught up, as a voter",
		ArgsUsage: "ID ADDR",
		Description: "The node must run already (lockd run --id ID --join --peers ...) and be reachable at ADDR (HOST:PORT, its --peers entry) " +
			"from the members. In each group: adds it as a learner, waits until it has caught up (snapshot, then log), promotes it, and " +
			"waits until the change is in force. Prints each step per group (--json: one object per step).",
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usageErrorf("want the new node's id and address: lockctl members add ID ADDR")
			}
			id, err := nodeIDArg(c.Args().Get(0))
			if err != nil {
				return err
			}
			addr := c.Args().Get(1)
			if err := checkAddrArg(addr); err != nil {
				return err
			}
			return runMemberOp(c, fmt.Sprintf("node %d is a voter of every group", id), func(ctx context.Context, cl *client.Client, o client.MemberOptions) error {
				return cl.AddMember(ctx, id, addr, o)
			})
		},
	}
}

func membersRemoveCommand() *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Usage:     "remove node ID from every group; the node stops (lockd exits with 8)",
		ArgsUsage: "ID",
		Description: "In each group: proposes the removal and waits until it is in force. The removed node learns it and exits with code 8; " +
			"it does not come back on its data dir. Remove a node only while the others keep a majority of every group's voters up.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("want the node's id: lockctl members remove ID")
			}
			id, err := nodeIDArg(c.Args().Get(0))
			if err != nil {
				return err
			}
			return runMemberOp(c, fmt.Sprintf("node %d is removed from every group", id), func(ctx context.Context, cl *client.Client, o client.MemberOptions) error {
				return cl.RemoveMember(ctx, id, o)
			})
		},
	}
}

func membersReplaceCommand() *cli.Command {
	return &cli.Command{
		Name:      "replace",
		Usage:     "replace node OLD by node NEW at ADDR: members add NEW ADDR, then members remove OLD",
		ArgsUsage: "OLD NEW ADDR",
		Description: "Adds NEW to every group (learner, caught up, voter, in force) and only then removes OLD, so every group keeps " +
			"a majority throughout. NEW must run already (lockd run --id NEW --join --peers ...). This is how a node that lost its " +
			"disk comes back: as a new id (README, Operations).",
		Action: func(c *cli.Context) error {
			if c.NArg() != 3 {
				return usageErrorf("want the old node's id, the new node's id and its address: lockctl members replace OLD NEW ADDR")
			}
			old, err := nodeIDArg(c.Args().Get(0))
			if err != nil {
				return err
			}
			nu, err := nodeIDArg(c.Args().Get(1))
			if err != nil {
				return err
			}
			if old == nu {
				return usageErrorf("OLD and NEW are both %d: a replacement is a new node id (a node's state and address change only under a new id)", old)
			}
			addr := c.Args().Get(2)
			if err := checkAddrArg(addr); err != nil {
				return err
			}
			return runMemberOp(c, fmt.Sprintf("node %d replaced node %d in every group", nu, old), func(ctx context.Context, cl *client.Client, o client.MemberOptions) error {
				if err := cl.AddMember(ctx, nu, addr, o); err != nil {
					return fmt.Errorf("adding node %d (node %d was not removed): %w", nu, old, err)
				}
				return cl.RemoveMember(ctx, old, o)
			})
		},
	}
}

func nodeIDArg(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 0 {
		return 0, usageErrorf("node id %q is not a number from 1 on", s)
	}
	return uint32(v), nil
}

func checkAddrArg(addr string) error {
	i := strings.LastIndexByte(addr, ':')
	if i <= 0 || i == len(addr)-1 {
		return usageErrorf("address %q is not HOST:PORT (the node's --peers entry)", addr)
	}
	if _, err := strconv.ParseUint(addr[i+1:], 10, 16); err != nil {
		return usageErrorf("address %q: port %q is not a number", addr, addr[i+1:])
	}
	return nil
}

// runMemberOp dials, runs op under --timeout (default
// defaultMemberTimeout), prints every step, and says what was done.
func runMemberOp(c *cli.Context, doneMsg string, op func(context.Context, *client.Client, client.MemberOptions) error) error {
	d := c.Duration("timeout")
	if d <= 0 {
		d = defaultMemberTimeout
	}
	ctx, cancel := context.WithTimeout(c.Context, d)
	defer cancel()
	cl, err := connect(ctx, c)
	if err != nil {
		return err
	}
	defer cl.Close()
	p := newPrinter(c)
	o := client.MemberOptions{Report: func(st client.MemberStep) {
		if p.json {
			_ = p.event("member-step", st)
			return
		}
		p.linef("group %d: node %d %s (master %d)", st.Group, st.Node, stepWords(st.Step), st.Master)
	}}
	if err := op(ctx, cl, o); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrPermission) {
			return &exitErr{code: exitTimeout, err: fmt.Errorf("%w: --timeout %v ran out before every change was in force; run the same command again to finish (steps done are skipped)", err, d)}
		}
		return err
	}
	if p.json {
		return p.event("done", map[string]string{"result": doneMsg})
	}
	p.linef("done: %s", doneMsg)
	return nil
}

func stepWords(step string) string {
	switch step {
	case "added-learner":
		return "added as a learner"
	case "promoted":
		return "promoted to voter"
	case "removed":
		return "removal proposed"
	case "in-force":
		return "change in force"
	case "already-voter":
		return "already a voter (nothing to do)"
	case "already-removed":
		return "already not a member (nothing to do)"
	}
	return step
}
