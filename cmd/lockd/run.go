package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/lockd/lockd/internal/server"
	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/pebblestore"
	"github.com/urfave/cli/v2"
)

const runDescription = `Runs node --id of a cluster until SIGINT or SIGTERM, then stops cleanly
(a second signal kills it at once). Every node must be started with the same
--peers and --groups. Example, three nodes on one host:

   lockd certs init --dir certs
   for n in 1 2 3; do lockd certs node $n --dir certs; done
   lockd run --id 1 --listen 127.0.0.1:7001 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
             --data-dir data/1 --certs certs --admin 127.0.0.1:9001
   (and the same with --id 2 and 3, their own --listen, --data-dir and --admin)

Certificates: --certs DIR must hold ca.crt, node-N.crt and node-N.key (see
lockd certs --help). The node refuses to start without them.

Groups: the lock namespace is split over --groups Paxos groups. The count is
fixed when a cluster is created: a data dir made with another count refuses
to start.

Admin port (--admin): a status page at /, Prometheus metrics at /metrics,
and /debug/pprof (unless --admin-pprof=false). It has no authentication:
bind it to 127.0.0.1 or a private interface; on any other address the node
logs a warning at start.

Access rules (--acl FILE): who may lock, read and admin which lock-name
prefixes, and per-identity limits (README, Security). SIGHUP reloads the
file; a bad file is refused with its line and the rules in force stay.

UDP buffers: QUIC asks for 7 MiB socket buffers. Where the kernel caps them
lower, raise the caps once per host (persist them in /etc/sysctl.d/):

   sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000

On loopback the caps do not matter, and lockd says nothing about them.`

func runCommand() *cli.Command {
	return &cli.Command{
		Name:        "run",
		Usage:       "run one node of a cluster",
		UsageText:   "lockd run --id N --peers 1=HOST:PORT,2=...,3=... --data-dir DIR --certs DIR [--listen ADDR] [--admin ADDR] [...]",
		Description: runDescription,
		Flags: []cli.Flag{
			&cli.UintFlag{Name: "id", Usage: "this node's id `N`, one of --peers", EnvVars: []string{"LOCKD_ID"}},
			&cli.StringFlag{Name: "peers", Usage: "every node of the cluster, this one included: `ID=HOST:PORT,...`", EnvVars: []string{"LOCKD_PEERS"}},
			&cli.StringFlag{Name: "listen", Usage: "UDP address `HOST:PORT` to listen on (default: this node's --peers address)", EnvVars: []string{"LOCKD_LISTEN"}},
			&cli.StringFlag{Name: "data-dir", Usage: "directory `DIR` of this node's pebble database (created if missing)", EnvVars: []string{"LOCKD_DATA_DIR"}},
			&cli.StringFlag{Name: "certs", Usage: "directory `DIR` with ca.crt, node-N.crt and node-N.key (see lockd certs)", EnvVars: []string{"LOCKD_CERTS"}},
			&cli.IntFlag{Name: "groups", Usage: "number of Paxos groups; fixed when the cluster is created", Value: 16, EnvVars: []string{"LOCKD_GROUPS"}},
			&cli.StringFlag{Name: "admin", Usage: "HTTP address `HOST:PORT` of the status page, /metrics and /debug/pprof (off when empty)", EnvVars: []string{"LOCKD_ADMIN"}},
			&cli.StringFlag{Name: "cluster", Usage: "cluster name, recorded in the data dir so it cannot join another cluster", Value: "lockd", EnvVars: []string{"LOCKD_CLUSTER"}},
			&cli.DurationFlag{Name: "lease", Usage: "master lease: a dead master's groups are served again about this long after it stops", Value: 2 * time.Second, EnvVars: []string{"LOCKD_LEASE"}},
			&cli.IntFlag{Name: "window", Usage: "Paxos slots in flight per group", Value: 64, EnvVars: []string{"LOCKD_WINDOW"}},
			&cli.IntFlag{Name: "metrics-prefix-depth", Usage: "label the per-lock metrics with the first `N` \"/\"-separated segments of lock names (0: no prefix label; at most 200 prefixes)", Value: 1, EnvVars: []string{"LOCKD_METRICS_PREFIX_DEPTH"}},
			&cli.BoolFlag{Name: "recover-from-peers", Usage: "re-create this node after it lost its state (exit code 5), on an empty data dir: waits for every other node, and votes only once caught up (README, Operations)", EnvVars: []string{"LOCKD_RECOVER_FROM_PEERS"}},
			&cli.BoolFlag{Name: "join", Usage: "start a brand-new node (a new --id, an empty data dir) of a running cluster: --peers lists this node and at least one member to reach; it waits until `lockctl members add ID ADDR` adds it, takes the cluster's founding configuration from a member (not from --peers), catches up as a learner and votes once promoted (README, Operations)", EnvVars: []string{"LOCKD_JOIN"}},
			&cli.IntFlag{Name: "snapshot-every", Usage: "snapshot each group every `N` applied slots and delete its log below (minus --snapshot-margin); negative: never", Value: 10000, EnvVars: []string{"LOCKD_SNAPSHOT_EVERY"}},
			&cli.Uint64Flag{Name: "snapshot-margin", Usage: "log slots kept below a group's snapshot for peers slightly behind", Value: 1024, EnvVars: []string{"LOCKD_SNAPSHOT_MARGIN"}},
			&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: "info", EnvVars: []string{"LOCKD_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Usage: "text or json", Value: "text", EnvVars: []string{"LOCKD_LOG_FORMAT"}},
			securityFlags()[0], securityFlags()[1],
		},
		Action: runNode,
	}
}

// nodeFlags is what `lockd run` was asked to do, checked.
type nodeFlags struct {
	id      paxos.NodeID
	peers   map[paxos.NodeID]string
	listen  string
	dataDir string
	certs   string
	groups  int
	admin   string
	cluster string
	lease   time.Duration
	window  int
	recover bool
	join    bool
}

func parseNodeFlags(c *cli.Context) (nodeFlags, error) {
	if c.Args().Present() {
		return nodeFlags{}, usageErrorf("run takes no arguments, got %q (flags go before it?)", c.Args().First())
	}
	f := nodeFlags{
		listen: c.String("listen"), dataDir: c.String("data-dir"), certs: c.String("certs"),
		groups: c.Int("groups"), admin: c.String("admin"), cluster: c.String("cluster"),
		lease: c.Duration("lease"), window: c.Int("window"), recover: c.Bool("recover-from-peers"),
		join: c.Bool("join"),
	}
	id := c.Uint("id")
	if id == 0 || id > 1<<32-1 {
		return f, usageErrorf("--id (LOCKD_ID) is required: this node's id, a number from 1 on that --peers lists")
	}
	f.id = paxos.NodeID(id)
	if c.String("peers") == "" {
		return f, usageErrorf("--peers (LOCKD_PEERS) is required: every node as ID=HOST:PORT, e.g. 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003")
	}
	peers, err := parsePeers(c.String("peers"))
	if err != nil {
		return f, usageErrorf("%v", err)
	}
	if _, ok := peers[f.id]; !ok {
		return f, usageErrorf("--peers %s does not list this node (--id %d)", formatPeers(peers), f.id)
	}
	f.peers = peers
	if f.listen == "" {
		f.listen = peers[f.id]
	} else if _, _, err := net.SplitHostPort(f.listen); err != nil {
		return f, usageErrorf("--listen %q: want HOST:PORT", f.listen)
	}
	if f.dataDir == "" {
		return f, usageErrorf("--data-dir (LOCKD_DATA_DIR) is required: where node %d keeps its Paxos state, e.g. --data-dir data/%d", f.id, f.id)
	}
	if f.groups < 1 || f.groups > 4096 {
		return f, usageErrorf("--groups %d: want 1 to 4096", f.groups)
	}
	if f.lease < 100*time.Millisecond {
		return f, usageErrorf("--lease %v: want at least 100ms (default 2s)", f.lease)
	}
	if f.window < 1 {
		return f, usageErrorf("--window %d: want 1 or more", f.window)
	}
	if f.admin != "" {
		if _, _, err := net.SplitHostPort(f.admin); err != nil {
			return f, usageErrorf("--admin %q: want HOST:PORT, e.g. 127.0.0.1:9001", f.admin)
		}
	}
	return f, nil
}

// certsHint says exactly how to make the certificates node id needs in dir.
func certsHint(dir string, id paxos.NodeID, needCA bool) string {
	if dir == "" {
		dir = "certs"
	}
	if needCA {
		return fmt.Sprintf("make them with `lockd certs init --dir %s` then `lockd certs node %d --dir %s`, and start with --certs %s", dir, id, dir, dir)
	}
	return fmt.Sprintf("make them with `lockd certs node %d --dir %s`", id, dir)
}

// loadNodeTLS loads node id's certificates from dir, and says how to make
// them when they are missing.
func loadNodeTLS(dir string, id paxos.NodeID) (*tls.Config, error) {
	if dir == "" {
		return nil, setupErrorf("node %d needs certificates (--certs DIR or LOCKD_CERTS with ca.crt, node-%d.crt, node-%d.key): %s",
			id, id, id, certsHint("", id, true))
	}
	caFile := filepath.Join(dir, pki.CACertFile)
	base := filepath.Join(dir, nodeCertBase(uint32(id)))
	certFile, keyFile := base+".crt", base+".key"
	if _, err := os.Stat(caFile); errors.Is(err, fs.ErrNotExist) {
		return nil, setupErrorf("no certificates in %s (no %s): %s", dir, caFile, certsHint(dir, id, true))
	}
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			return nil, setupErrorf("no certificate for node %d in %s (no %s): %s", id, dir, f, certsHint(dir, id, false))
		}
	}
	tlsConf, err := pki.LoadNodeTLSConfig(caFile, certFile, keyFile)
	if err != nil {
		return nil, setupErrorf("%v: re-issue it with `lockd certs node %d --dir %s`", err, id, dir)
	}
	if leaf := tlsConf.Certificates[0].Leaf; leaf != nil {
		if got, ok := pki.NodeIDFromCert(leaf); ok && got != strconv.FormatUint(uint64(id), 10) {
			return nil, setupErrorf("%s was issued for node %s, not node %d: re-issue it with `lockd certs node %d --dir %s`", certFile, got, id, id, dir)
		}
	}
	return tlsConf, nil
}

// startError gives an error from server.New its exit code and, where the
// operator can fix it, says how.
func startError(id paxos.NodeID, listen string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return withCode(exitAddrBusy, fmt.Errorf("node %d: UDP address %s is in use (is another lockd running?): stop it or pick another --listen and --peers entry: %w", id, listen, err))
	case errors.Is(err, pebblestore.ErrMetaMismatch):
		return withCode(exitSetup, fmt.Errorf("node %d refuses to start: %w", id, err))
	case errors.Is(err, server.ErrRemoved):
		return withCode(exitRemoved, fmt.Errorf("node %d refuses to start: %w", id, err))
	case errors.Is(err, server.ErrRecoverNotEmpty), errors.Is(err, server.ErrJoinNotEmpty):
		return withCode(exitSetup, fmt.Errorf("node %d refuses to start: %w", id, err))
	case errors.Is(err, pebblestore.ErrDamaged):
		return damagedError(id, err)
	case errors.Is(err, pebblestore.ErrDiskFull):
		return withCode(exitDiskFull, fmt.Errorf("node %d refuses to start: %w: free space on the data dir's disk, then start it again", id, err))
	case errors.Is(err, pebblestore.ErrLocked):
		return withCode(exitSetup, fmt.Errorf("node %d refuses to start: its data dir is locked by another process (is another lockd running on it?): stop that one, or give this one its own --data-dir: %w", id, err))
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return withCode(exitSetup, fmt.Errorf("node %d refuses to start: it cannot write its data dir (read-only, or not its owner's): give it a writable --data-dir: %w", id, err))
	}
	return withCode(exitFailed, fmt.Errorf("node %d: %w", id, err))
}

// damagedError says what to do about a data dir that lost durable state,
// with exit code 5.
func damagedError(id paxos.NodeID, err error) error {
	return withCode(exitDamaged, fmt.Errorf("node %d refuses to serve: %w. "+
		"It must not vote with this state: it could break a promise it made. "+
		"Replace it: move the data dir aside (keep it for inspection), then, with the other nodes up, "+
		"start node %d on an empty data dir with --recover-from-peers; it catches up before it votes (README, \"Operations\")", id, err, id))
}

// listenAdmin opens the admin port before anything else starts, so that a
// busy port is reported before the node joins the cluster.
func listenAdmin(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, withCode(exitAddrBusy, fmt.Errorf("admin address %s is in use: pick another --admin: %w", addr, err))
		}
		return nil, withCode(exitSetup, fmt.Errorf("admin address %s: %w", addr, err))
	}
	return ln, nil
}

// serveAdmin serves h on ln until ctx ends, then shuts down within a bound.
func serveAdmin(ctx context.Context, ln net.Listener, h http.Handler, logger *slog.Logger) (wait func()) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin port stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	return func() { <-stopped; <-done }
}

// signalContext ends at the first SIGINT or SIGTERM. After it, the signals
// are the runtime's again, so a second Ctrl-C kills the process at once.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

func runNode(c *cli.Context) error {
	// Signals are taken from the start: a SIGTERM while the node opens and
	// checks its data dir (which can take a while) stops it cleanly once
	// it is up, instead of killing it mid-open with the runtime's default.
	ctx, stop := signalContext()
	defer stop()
	logger, err := newLogger(c.String("log-level"), c.String("log-format"), c.App.ErrWriter)
	if err != nil {
		return err
	}
	f, err := parseNodeFlags(c)
	if err != nil {
		return err
	}
	tlsConf, err := loadNodeTLS(f.certs, f.id)
	if err != nil {
		return err
	}
	quietUDPBufferWarning(logger, f.listen)
	clockRate, err := testClockRate(logger)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return setupErrorf("node %d: data dir: %v", f.id, err)
	}
	var adminLn net.Listener
	if f.admin != "" {
		if adminLn, err = listenAdmin(f.admin); err != nil {
			return err
		}
		defer adminLn.Close()
	}
	// A --join or --recover-from-peers node waits in NewContext until a
	// member tells it the cluster's founding configuration; a signal then
	// stops it cleanly.
	s, err := server.NewContext(ctx, server.Config{
		ID: f.id, Peers: f.peers, Listen: f.listen, Groups: f.groups, DataDir: f.dataDir,
		ClusterID: f.cluster, TLS: tlsConf, Lease: f.lease, Window: f.window, Logger: logger,
		RecoverFromPeers:   f.recover,
		Join:               f.join,
		ACLFile:            c.String("acl"),
		SnapshotEvery:      c.Int("snapshot-every"),
		SnapshotMargin:     c.Uint64("snapshot-margin"),
		MetricsPrefixDepth: metricsPrefixDepth(c.Int("metrics-prefix-depth")),
		TestClockRate:      clockRate,
	})
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			logger.Info("lockd node stopped before it started", "node", f.id)
			return nil
		}
		return startError(f.id, f.listen, err)
	}
	logger.Info("lockd node starting", "node", f.id, "version", versionString(), "listen", s.Addr().String(),
		"peers", formatPeers(f.peers), "groups", f.groups, "data_dir", f.dataDir, "admin", f.admin, "lease", f.lease, "window", f.window)
	waitAdmin := func() {}
	if adminLn != nil {
		warnOpenAdmin(logger, f.admin, c.Bool("admin-pprof"))
		waitAdmin = serveAdmin(ctx, adminLn, s.AdminHandlerWith(c.Bool("admin-pprof")), logger)
		logger.Info("admin port serving", "url", "http://"+adminLn.Addr().String()+"/")
	}
	if c.String("acl") != "" {
		reloadRulesOnHUP(ctx, s, logger)
	}
	runErr := s.Run(ctx)
	stopped := ctx.Err() != nil
	stop()
	waitAdmin()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		if errors.Is(runErr, server.ErrRemoved) {
			logger.Error("lockd node removed from the cluster; stopping for good", "node", f.id, "exit_code", exitRemoved)
			return withCode(exitRemoved, fmt.Errorf("node %d: %w", f.id, runErr))
		}
		logger.Error("lockd node failed", "node", f.id, "err", runErr)
		if errors.Is(runErr, pebblestore.ErrDamaged) {
			return damagedError(f.id, runErr)
		}
		return withCode(exitFailed, fmt.Errorf("node %d: %w", f.id, runErr))
	}
	if !stopped {
		return withCode(exitFailed, fmt.Errorf("node %d stopped on its own without a signal", f.id))
	}
	logger.Info("lockd node stopped", "node", f.id)
	return nil
}

// metricsPrefixDepth maps --metrics-prefix-depth to server.Config's field,
// where 0 means the default and a negative depth no prefix label.
func metricsPrefixDepth(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
