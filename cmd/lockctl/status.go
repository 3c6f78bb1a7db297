package main

import (
	"context"
	"fmt"
	"maps"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
)

func commands() []*cli.Command {
	return []*cli.Command{
		acquireCommand(), renewCommand(), releaseCommand(), electCommand(),
		statusCommand(), membersCommand(), watchCommand(), validateCommand(), benchCommand(),
		snapshotCommand(), versionCommand(), completionCommand(),
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:        "status",
		Usage:       "show the cluster (members and group masters), or a lock's holders",
		ArgsUsage:   "[NAME]",
		Description: "Without NAME: the nodes and which node masters each group, as one node sees it, and each node's access rules digest (RULES; a warning when they differ). With NAME: the lock's holders (session, fencing token, mode, metadata) and how many wait.",
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageErrorf("want at most one lock name: lockctl status [NAME]")
			}
			ctx, cl, done, err := dialOp(c)
			if err != nil {
				return err
			}
			defer done()
			p := newPrinter(c)
			if c.NArg() == 1 {
				info, err := cl.LockStatus(ctx, c.Args().First())
				if err != nil {
					return err
				}
				return printLock(p, info)
			}
			st, err := cl.ClusterStatus(ctx)
			if err != nil {
				return err
			}
			rules := nodeRules(ctx, cl, st)
			differ := rulesDiffer(rules)
			if differ != "" {
				fmt.Fprintln(c.App.ErrWriter, differ)
			}
			if p.json {
				return p.object(struct {
					*client.Status
					NodeRules   map[uint32]string `json:"node_rules"`
					RulesDiffer bool              `json:"rules_differ"`
				}{st, rules, differ != ""})
			}
			printMembersRules(p, st, rules)
			p.linef("")
			rows := make([][]string, 0, len(st.Masters))
			for _, m := range st.Masters {
				node, addr := strconv.FormatUint(uint64(m.Node), 10), m.Addr
				if m.Node == 0 {
					node, addr = "none", "-"
				}
				rows = append(rows, []string{strconv.FormatUint(uint64(m.Group), 10), node, addr, strconv.FormatUint(m.Epoch, 10)})
			}
			return p.table([]string{"GROUP", "MASTER", "ADDRESS", "EPOCH"}, rows)
		},
	}
}

type holderJSON struct {
	Session  uint64 `json:"session"`
	Token    uint64 `json:"token"`
	Shared   bool   `json:"shared"`
	Metadata string `json:"metadata,omitempty"`
}

func holdersJSON(hs []client.Holder) []holderJSON {
	out := make([]holderJSON, 0, len(hs))
	for _, h := range hs {
		out = append(out, holderJSON{Session: h.Session, Token: h.Token, Shared: h.Shared, Metadata: string(h.Metadata)})
	}
	return out
}

func printLock(p printer, info *client.LockInfo) error {
	if p.json {
		return p.object(map[string]any{"name": info.Name, "held": info.Held, "holders": holdersJSON(info.Holders), "waiters": info.Waiters})
	}
	if !info.Held {
		p.linef("%s is free (%d waiting)", info.Name, info.Waiters)
		return nil
	}
	rows := make([][]string, 0, len(info.Holders))
	for _, h := range info.Holders {
		mode := "exclusive"
		if h.Shared {
			mode = "shared"
		}
		rows = append(rows, []string{u64(h.Session), u64(h.Token), mode, fmt.Sprintf("%q", h.Metadata)})
	}
	p.linef("%s is held (%d waiting)", info.Name, info.Waiters)
	return p.table([]string{"SESSION", "TOKEN", "MODE", "METADATA"}, rows)
}

func printMembers(p printer, st *client.Status) error { return printMembersRules(p, st, nil) }

// printMembersRules prints the members, with each node's access rules
// digest when rules is given ("?": the node did not say).
func printMembersRules(p printer, st *client.Status, rules map[uint32]string) error {
	rows := make([][]string, 0, len(st.Members))
	for _, m := range st.Members {
		up := "down"
		if m.Up {
			up = "up"
		}
		row := []string{strconv.FormatUint(uint64(m.ID), 10), m.Addr, up}
		if rules != nil {
			r := rules[m.ID]
			if r == "" {
				r = "?"
			}
			row = append(row, r)
		}
		rows = append(rows, row)
	}
	header := []string{"NODE", "ADDRESS", "STATE"}
	if rules != nil {
		header = append(header, "RULES")
	}
	return p.table(header, rows)
}

// nodeRules asks every member for its access rules digest. The rules are
// not replicated: each node enforces its own --acl file, so a file changed
// on one node only shows here. A node that does not answer within a few
// seconds is left out.
func nodeRules(ctx context.Context, cl *client.Client, st *client.Status) map[uint32]string {
	out := map[uint32]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range st.Members {
		if m.ID == st.Node && st.Rules != "" {
			out[m.ID] = st.Rules
			continue
		}
		if m.Addr == "" || !m.Up {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			ns, err := cl.NodeStatus(nctx, m.Addr)
			if err != nil || ns.Rules == "" {
				return
			}
			mu.Lock()
			out[m.ID] = ns.Rules
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// rulesDiffer returns a warning when the nodes report different access
// rules, or "".
func rulesDiffer(rules map[uint32]string) string {
	seen := map[string]bool{}
	for _, r := range rules {
		seen[r] = true
	}
	if len(seen) < 2 {
		return ""
	}
	ids := slices.Sorted(maps.Keys(rules))
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("node %d: %s", id, rules[id]))
	}
	return "warning: the nodes enforce different access rules (" + strings.Join(parts, ", ") + "; \"none\" is no --acl file). " +
		"Each node checks requests against its own rules file, so a request may be allowed on one master and refused on another: " +
		"put the same file on every node and send each lockd SIGHUP to reload it (its log says \"access rules reloaded\" with the hash)"
}

func validateCommand() *cli.Command {
	return &cli.Command{
		Name:        "validate",
		Usage:       "check whether a fencing token is the current holder's",
		ArgsUsage:   "NAME TOKEN",
		Description: "Exits with 0 when TOKEN is held on NAME now, and with 5 when it is not.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usageErrorf("want a lock name and a token: lockctl validate NAME TOKEN")
			}
			name := c.Args().Get(0)
			token, err := strconv.ParseUint(c.Args().Get(1), 10, 64)
			if err != nil {
				return usageErrorf("token %q is not a number", c.Args().Get(1))
			}
			ctx, cl, done, err := dialOp(c)
			if err != nil {
				return err
			}
			defer done()
			ok, err := cl.Validate(ctx, name, token)
			if err != nil {
				return err
			}
			p := newPrinter(c)
			if p.json {
				p.object(map[string]any{"name": name, "token": token, "valid": ok})
			} else if ok {
				p.linef("token %d holds %s", token, name)
			} else {
				p.linef("token %d does not hold %s", token, name)
			}
			if !ok {
				return &exitErr{code: exitLockLost}
			}
			return nil
		},
	}
}

func watchCommand() *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "stream a lock's changes, or the group masters' (watch masters)",
		ArgsUsage: "NAME | masters",
		Description: `watch NAME prints the lock's holders, then every grant, release, expiry and
canceled wait, each with the lock's holders and queue length right after it
(--json: "holders", at most 64, "holder_count" and "waiters"); after a
reconnect it prints the holders again. watch masters
prints every group's master, then every change (with its epoch), "none"
while a group has no master. Use --lock to watch a lock named "masters".
It runs until interrupted, or for --timeout when set.`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "lock", Usage: "the argument is a lock name, even if it is \"masters\""}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("want a lock name or \"masters\": lockctl watch NAME | masters")
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if d := c.Duration("timeout"); d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			cctx, cancel := opContext(c)
			defer cancel()
			cl, err := connect(cctx, c)
			if err != nil {
				return err
			}
			defer cl.Close()
			p := newPrinter(c)
			if c.Args().First() == "masters" && !c.Bool("lock") {
				events, err := cl.WatchMasters(ctx)
				if err != nil {
					return err
				}
				for ev := range events {
					if p.json {
						p.event("master", ev)
						continue
					}
					node := "none"
					if ev.Node != 0 {
						node = fmt.Sprintf("node %d (%s)", ev.Node, ev.Addr)
					}
					p.linef("%s  group %d  epoch %d  master %s", stamp(), ev.Group, ev.Epoch, node)
				}
				return nil
			}
			events, err := cl.Watch(ctx, c.Args().First())
			if err != nil {
				return err
			}
			for ev := range events {
				if p.json {
					p.event(ev.Kind.String(), map[string]any{"name": ev.Name, "session": ev.Session, "token": ev.Token,
						"shared": ev.Shared, "holders": holdersJSON(ev.Holders), "holder_count": ev.HolderCount, "waiters": ev.Waiters})
					continue
				}
				if ev.Kind == client.EventSync {
					p.linef("%s  %s: %d holder(s), %d waiting", stamp(), ev.Name, len(ev.Holders), ev.Waiters)
					for _, h := range ev.Holders {
						p.linef("%s    held by session %d, token %d, shared %v", stamp(), h.Session, h.Token, h.Shared)
					}
					continue
				}
				p.linef("%s  %-8s session %d  token %d  shared %v  (now %d holder(s), %d waiting)", stamp(), ev.Kind, ev.Session, ev.Token, ev.Shared, ev.HolderCount, ev.Waiters)
			}
			return nil
		},
	}
}

func stamp() string { return time.Now().Format("15:04:05.000") }
