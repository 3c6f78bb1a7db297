package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
	"github.com/urfave/cli/v2"
)

const devDescription = `Starts a local cluster of --nodes nodes in this one process, on
127.0.0.1 ports --base-port, --base-port+1, ... (UDP), with a throw-away CA,
node certificates, a client certificate and a lockctl config file, and prints
how to use it. Admin pages (status, /metrics, /debug/pprof) listen on the TCP
ports --admin-base-port, --admin-base-port+1, ... (default --base-port+2000).

Everything goes into a temporary directory that is removed on Ctrl-C, unless
--dir is given: then the directory is kept, and started again later the
cluster keeps its locks and fencing tokens.

Logs go to stderr at --log-level warn, so that the instructions stay readable.`

// devDefaultBasePort is the first UDP port of `lockd dev`.
const devDefaultBasePort = 7001

func devCommand() *cli.Command {
	return &cli.Command{
		Name:        "dev",
		Usage:       "run a local cluster in one process, with throw-away certificates",
		UsageText:   "lockd dev [--nodes 3] [--base-port 7001] [--dir DIR]",
		Description: devDescription,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Usage: "number of nodes (1 to 7)", Value: 3, EnvVars: []string{"LOCKD_DEV_NODES"}},
			&cli.IntFlag{Name: "base-port", Usage: "UDP port of node 1; node N listens on base-port+N-1", Value: devDefaultBasePort, EnvVars: []string{"LOCKD_DEV_BASE_PORT"}},
			&cli.IntFlag{Name: "admin-base-port", Usage: "TCP port of node 1's admin page (default base-port+2000; -1: none)", EnvVars: []string{"LOCKD_DEV_ADMIN_BASE_PORT"}},
			&cli.StringFlag{Name: "dir", Usage: "keep certificates, data and lockctl.json here instead of a temporary directory", EnvVars: []string{"LOCKD_DEV_DIR"}},
			&cli.IntFlag{Name: "groups", Usage: "number of Paxos groups", Value: 16, EnvVars: []string{"LOCKD_GROUPS"}},
			&cli.DurationFlag{Name: "lease", Usage: "master lease", Value: 2 * time.Second, EnvVars: []string{"LOCKD_LEASE"}},
			&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: "warn", EnvVars: []string{"LOCKD_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Usage: "text or json", Value: "text", EnvVars: []string{"LOCKD_LOG_FORMAT"}},
		},
		Action: runDev,
	}
}

// devNode is one node of the dev cluster.
type devNode struct {
	id      paxos.NodeID
	pc      net.PacketConn
	adminLn net.Listener
	srv     *server.Server
	done    chan struct{} // closed when srv.Run has returned
	err     error         // what srv.Run returned; read after done
}

func runDev(c *cli.Context) error {
	if c.Args().Present() {
		return usageErrorf("dev takes no arguments, got %q", c.Args().First())
	}
	logger, err := newLogger(c.String("log-level"), c.String("log-format"), c.App.ErrWriter)
	if err != nil {
		return err
	}
	n, base, groups := c.Int("nodes"), c.Int("base-port"), c.Int("groups")
	if n < 1 || n > 7 {
		return usageErrorf("--nodes %d: want 1 to 7", n)
	}
	if base < 1 || base+n-1 > 65535 {
		return usageErrorf("--base-port %d: want a port from 1 to %d", base, 65536-n)
	}
	adminBase := c.Int("admin-base-port")
	if !c.IsSet("admin-base-port") {
		adminBase = base + 2000
		if adminBase+n-1 > 65535 {
			adminBase = -1
		}
	}
	if adminBase == 0 || adminBase < -1 || adminBase+n-1 > 65535 {
		return usageErrorf("--admin-base-port %d: want a port from 1 to %d, or -1 for none", adminBase, 65536-n)
	}
	if groups < 1 || groups > 4096 {
		return usageErrorf("--groups %d: want 1 to 4096", groups)
	}
	quietUDPBufferWarning(nil, "127.0.0.1:0")

	dir, keep := c.String("dir"), true
	if dir == "" {
		if dir, err = os.MkdirTemp("", "lockd-dev-"); err != nil {
			return setupErrorf("dev: temporary directory: %v", err)
		}
		keep = false
	} else if dir, err = filepath.Abs(dir); err != nil {
		return setupErrorf("dev: --dir: %v", err)
	}
	if !keep {
		defer os.RemoveAll(dir)
	}

	// Take every port first, so that a busy one is reported before anything
	// starts, and every node knows every address.
	nodes := make([]*devNode, n)
	peers := map[paxos.NodeID]string{}
	defer func() {
		for _, d := range nodes {
			if d != nil && d.pc != nil {
				d.pc.Close()
			}
			if d != nil && d.adminLn != nil {
				d.adminLn.Close()
			}
		}
	}()
	for i := range nodes {
		id := paxos.NodeID(i + 1)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return withCode(exitAddrBusy, fmt.Errorf("UDP port %d (node %d) is in use, perhaps by another `lockd dev`: stop it, or pick other ports with --base-port, e.g. lockd dev --base-port %d",
					base+i, id, freeBasePort(base, n)))
			}
			return withCode(exitSetup, fmt.Errorf("dev: listen on %s: %w", addr, err))
		}
		nodes[i] = &devNode{id: id, pc: pc}
		peers[id] = addr
		if adminBase > 0 {
			nodes[i].adminLn = devAdminListener(logger, adminBase+i, id)
		}
	}

	cfgPath, tlsByNode, err := devCerts(dir, peers)
	if err != nil {
		return err
	}

	ctx, stop := signalContext()
	defer stop()
	for _, d := range nodes {
		nodeLog := logger
		d.srv, err = server.New(server.Config{
			ID: d.id, Peers: peers, Groups: groups, DataDir: filepath.Join(dir, fmt.Sprintf("node-%d", d.id)),
			ClusterID: "lockd-dev", TLS: tlsByNode[d.id], PacketConn: d.pc, Lease: c.Duration("lease"), Logger: nodeLog,
		})
		if err != nil {
			stop()
			waitDev(nodes)
			err = startError(d.id, peers[d.id], err)
			if keep && errors.Is(err, pebblestore.ErrMetaMismatch) {
				err = withCode(exitSetup, fmt.Errorf("%w (or remove %s to start afresh)", err, dir))
			}
			return err
		}
		d.done = make(chan struct{})
		go func(d *devNode) {
			defer close(d.done)
			d.err = d.srv.Run(ctx)
		}(d)
	}
	var waits []func()
	for _, d := range nodes {
		if d.adminLn != nil {
			waits = append(waits, serveAdmin(ctx, d.adminLn, d.srv.AdminHandler(), logger))
		}
	}

	ready := waitDevMasters(ctx, nodes, groups, 20*time.Second)
	printDevUsage(c.App.Writer, dir, keep, cfgPath, nodes, peers, groups, ready)

	// Run until Ctrl-C, or until a node fails.
	var runErr error
	failed := make(chan *devNode, len(nodes))
	for _, d := range nodes {
		go func(d *devNode) {
			select {
			case <-d.done:
				failed <- d
			case <-ctx.Done():
			}
		}(d)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(c.App.Writer, "\nstopping the dev cluster...")
	case d := <-failed:
		runErr = fmt.Errorf("node %d stopped on its own: %v", d.id, d.err)
		logger.Error("dev cluster failed", "err", runErr)
	}
	stop()
	waitDev(nodes)
	for _, w := range waits {
		w()
	}
	if keep {
		fmt.Fprintf(c.App.Writer, "stopped; kept %s\n", dir)
	} else {
		fmt.Fprintf(c.App.Writer, "stopped; removed %s\n", dir)
	}
	if runErr != nil {
		return withCode(exitFailed, runErr)
	}
	return nil
}

// freeBasePort suggests a base port above base from which n UDP ports are
// free right now (a hint only: they may be taken by the time it is used).
func freeBasePort(base, n int) int {
	for cand := base + 100; cand+n-1 <= 65535 && cand < base+2000; cand += 100 {
		free := true
		for i := 0; i < n && free; i++ {
			pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cand+i)))
			if err != nil {
				free = false
				continue
			}
			pc.Close()
		}
		if free {
			return cand
		}
	}
	return base + 100
}

// devAdminListener opens node id's admin port. When it is taken, the admin
// page moves to a port the kernel picks: it is a convenience, and a busy
// port should not stop `lockd dev` from starting (F1).
func devAdminListener(logger *slog.Logger, port int, id paxos.NodeID) net.Listener {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err == nil {
		return ln
	}
	ln, err2 := net.Listen("tcp", "127.0.0.1:0")
	if err2 != nil {
		logger.Warn("no admin page for this node", "node", id, "port", port, "err", err)
		return nil
	}
	logger.Warn("admin port in use; the admin page moved (choose ports with --admin-base-port)", "node", id, "port", port, "now", ln.Addr().String())
	return ln
}

// waitDev waits, within a bound, for every started node to stop.
func waitDev(nodes []*devNode) {
	deadline := time.After(15 * time.Second)
	for _, d := range nodes {
		if d == nil || d.done == nil {
			continue
		}
		select {
		case <-d.done:
		case <-deadline:
			return
		}
	}
}

// devCerts makes (or, in a kept --dir, reuses) the dev CA, issues node and
// client certificates and writes the lockctl config file.
func devCerts(dir string, peers map[paxos.NodeID]string) (cfgPath string, tlsByNode map[paxos.NodeID]*tls.Config, err error) {
	certDir := filepath.Join(dir, "certs")
	var ca *pki.CA
	if _, statErr := os.Stat(filepath.Join(certDir, pki.CACertFile)); statErr == nil {
		if ca, err = pki.LoadCA(certDir); err != nil {
			return "", nil, setupErrorf("dev: %v (remove %s to start over)", err, dir)
		}
	} else {
		if ca, err = pki.NewCA("lockd dev CA", 10*365*24*time.Hour); err != nil {
			return "", nil, setupErrorf("dev: %v", err)
		}
		if err := ca.Save(certDir); err != nil {
			return "", nil, setupErrorf("dev: %v", err)
		}
	}
	tlsByNode = map[paxos.NodeID]*tls.Config{}
	for id := range peers {
		certPEM, keyPEM, err := ca.IssueNode(strconv.FormatUint(uint64(id), 10), nil)
		if err != nil {
			return "", nil, setupErrorf("dev: %v", err)
		}
		if err := pki.WriteKeyPair(certDir, nodeCertBase(uint32(id)), certPEM, keyPEM); err != nil {
			return "", nil, setupErrorf("dev: %v", err)
		}
		if tlsByNode[id], err = pki.NodeTLSConfig(ca.CertPEM(), certPEM, keyPEM); err != nil {
			return "", nil, setupErrorf("dev: %v", err)
		}
	}
	certPEM, keyPEM, err := ca.IssueClient("lockctl")
	if err != nil {
		return "", nil, setupErrorf("dev: %v", err)
	}
	if err := pki.WriteKeyPair(certDir, clientCertBase("lockctl"), certPEM, keyPEM); err != nil {
		return "", nil, setupErrorf("dev: %v", err)
	}
	cfg := client.Config{
		CAFile:   filepath.Join(certDir, pki.CACertFile),
		CertFile: filepath.Join(certDir, clientCertBase("lockctl")+".crt"),
		KeyFile:  filepath.Join(certDir, clientCertBase("lockctl")+".key"),
	}
	for i := 1; i <= len(peers); i++ {
		cfg.Endpoints = append(cfg.Endpoints, peers[paxos.NodeID(i)])
	}
	cfgPath = filepath.Join(dir, "lockctl.json")
	if err := client.WriteConfigFile(cfgPath, cfg); err != nil {
		return "", nil, setupErrorf("dev: %v", err)
	}
	return cfgPath, tlsByNode, nil
}

// waitDevMasters waits, within timeout, until every group has a serving
// master, so that the printed commands work at once.
func waitDevMasters(ctx context.Context, nodes []*devNode, groups int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		serving := make([]bool, groups)
		count := 0
		for _, d := range nodes {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := d.srv.Status(sctx)
			cancel()
			if err != nil {
				continue
			}
			for _, g := range st.Groups {
				if g.Serving && int(g.Group) < groups && !serving[g.Group] {
					serving[g.Group] = true
					count++
				}
			}
		}
		if count == groups {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// lockctlCommand is how the printed instructions run lockctl: through go run
// inside a checkout of lockd, the installed binary elsewhere.
func lockctlCommand() string {
	if b, err := os.ReadFile("go.mod"); err == nil && strings.Contains(string(b), "module github.com/lockd/lockd\n") {
		return "go run ./cmd/lockctl"
	}
	return "lockctl"
}

func printDevUsage(w io.Writer, dir string, keep bool, cfgPath string, nodes []*devNode, peers map[paxos.NodeID]string, groups int, ready bool) {
	lc := lockctlCommand()
	first, last := peers[1], peers[paxos.NodeID(len(nodes))]
	var b strings.Builder
	fmt.Fprintf(&b, "lockd dev: %d nodes on %s", len(nodes), first)
	if len(nodes) > 1 {
		_, lastPort, _ := net.SplitHostPort(last)
		fmt.Fprintf(&b, "-%s", lastPort)
	}
	fmt.Fprintf(&b, " (UDP), %d groups, files in %s", groups, dir)
	if keep {
		b.WriteString(" (kept)\n")
	} else {
		b.WriteString(" (removed on exit)\n")
	}
	if !ready {
		b.WriteString("warning: not every group has a master yet; the first commands may wait a moment (see the status pages)\n")
	}
	b.WriteString("\nThen, in another terminal:\n\n")
	fmt.Fprintf(&b, "  export LOCKD_CONFIG=%s\n", cfgPath)
	fmt.Fprintf(&b, "  %s acquire demo -- sh -c 'echo token=$LOCKD_FENCING_TOKEN; sleep 5'\n", lc)
	fmt.Fprintf(&b, "  %s status\n", lc)
	fmt.Fprintf(&b, "  %s watch masters\n", lc)
	var urls []string
	for _, d := range nodes {
		if d.adminLn != nil {
			urls = append(urls, "http://"+d.adminLn.Addr().String()+"/")
		}
	}
	if len(urls) > 0 {
		fmt.Fprintf(&b, "\nStatus pages (also /metrics, /debug/pprof): %s\n", strings.Join(urls, " "))
	}
	b.WriteString("\nCtrl-C stops the cluster.\n")
	io.WriteString(w, b.String())
}
