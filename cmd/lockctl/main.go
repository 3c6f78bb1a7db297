// Command lockctl is the command line of lockd: acquire, renew and release
// locks, run a command while holding one or while leading, watch locks and
// masters, and show the cluster. Run `lockctl --help` for the commands and
// the exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/procs"
)

// Exit codes; the app's Description documents them.
const (
	exitOK    = 0
	exitError = 1 // the cluster refused, or anything else went wrong
	// exitUsage is sysexits' EX_USAGE, not 2: the Go runtime exits with 2
	// when a goroutine panics, and a crash must never read as bad usage.
	exitUsage       = 64
	exitUnreachable = 3
	exitTimeout     = 4 // timed out waiting for the lock, or it is held (--wait=false)
	exitLockLost    = 5
	exitPermission  = 6   // the identity may not do this (README, Security)
	exitInternal    = 70  // a bug in lockctl (a panic): please report it
	exitNotRunnable = 126 // CMD exists but cannot be run
	exitNotFound    = 127 // CMD is not found
)

const exitCodesHelp = `EXIT CODES
   0  success (validate: the token is the current holder's)
   1  any other failure: the cluster refused the request (the message says why)
   2  lockctl crashed (a Go panic outside the main goroutine): a bug,
      please report it with its output
   3  cannot reach the cluster, or the lock's group has no master
   4  timed out waiting for the lock (--timeout), or it is held (--wait=false);
      members add/remove/replace: --timeout ran out before every change was
      in force (run it again to finish)
   5  the lock was lost (with CMD: CMD was stopped); renew, release and
      validate: the lock is not held under that session and token
   6  permission denied: the session belongs to another identity, or an
      access rule refuses it (the message names the owner or the rule)
   N  with CMD: CMD's own exit code, when it ran and exited by itself
  64  bad usage: flags, arguments or client configuration
  70  a bug in lockctl (it panicked): please report it with its output
 126  acquire, elect: CMD exists but cannot be run (permissions); nothing
      was acquired
 127  acquire, elect: CMD is not found; nothing was acquired
 128+N  acquire, elect: stopped by signal N (129 SIGHUP, 130 SIGINT, 143
      SIGTERM); a wait is taken out of the queue and the session closed
      before lockctl exits; a running CMD gets the signal, and the lock is
      released once CMD has exited`

const description = `lockctl talks to a lockd cluster: it acquires, renews and releases locks
with fencing tokens, runs a command while holding a lock or while leading,
watches locks and group masters, and shows the cluster.

Say where the cluster is with --endpoints and the certificate flags, or with
--config (the client config file that ` + "`lockd dev`" + ` writes). Flags after a
command's arguments are fine: lockctl acquire NAME --ttl 30s -- CMD ARGS.

` + exitCodesHelp

// Keys of app.Metadata: the command to run after "--", and whether "--"
// was given.
const (
	metaCmd      = "cmd"
	metaDashDash = "dashdash"
)

// commandArgs returns what followed "--", and whether "--" was given.
func commandArgs(c *cli.Context) ([]string, bool) {
	cmd, _ := c.App.Metadata[metaCmd].([]string)
	dd, _ := c.App.Metadata[metaDashDash].(bool)
	return cmd, dd
}

// exitErr carries an exit code, and the error to print (nil: print nothing).
type exitErr struct {
	code   int
	err    error
	noHint bool // do not point at --help
}

func (e *exitErr) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitErr) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitErr{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	var ee *exitErr
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, client.ErrLockLost), errors.Is(err, client.ErrSessionExpired):
		return exitLockLost
	case errors.Is(err, client.ErrLockHeld):
		return exitTimeout
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrNoMaster), errors.Is(err, context.DeadlineExceeded):
		return exitUnreachable
	case errors.Is(err, client.ErrPermission):
		return exitPermission
	}
	return exitError
}

func main() {
	// bench --local runs nodes in this process: they need more scheduler
	// slots than cores, like lockd (see internal/procs).
	procs.Tune(os.Getenv("GOMAXPROCS"))
	os.Exit(run(context.Background(), os.Args, os.Stdout, os.Stderr))
}

// run runs lockctl with args (args[0] is the program name) and returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	stdout, stderr = lockedWriter(stdout), lockedWriter(stderr)
	return runApp(ctx, newApp(stdout, stderr), args, stderr)
}

// runApp runs app with args and returns the exit code. A panic is a bug:
// it exits with exitInternal, never with Go's 2, which is the bad-usage
// code.
func runApp(ctx context.Context, app *cli.App, args []string, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "lockctl: internal error (a bug; please report it with this output): %v\n%s", r, debug.Stack())
			code = exitInternal
		}
	}()
	args, cmd, dashdash := splitArgs(app, args)
	app.Metadata = map[string]any{metaCmd: cmd, metaDashDash: dashdash}
	err := app.RunContext(ctx, args)
	if err != nil && (strings.HasPrefix(err.Error(), "Required flag") || strings.HasPrefix(err.Error(), "No help topic")) {
		err = &exitErr{code: exitUsage, err: err} // cli has no type for them
	}
	err = tlsProblem(err)
	code = exitCode(err)
	ee := &exitErr{}
	if err != nil && !(errors.As(err, &ee) && ee.err == nil) {
		fmt.Fprintf(stderr, "lockctl: %v\n", err)
		if code == exitUsage && !ee.noHint {
			fmt.Fprintln(stderr, "run lockctl --help (or lockctl COMMAND --help) for usage")
		}
	}
	return code
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "lockctl",
		Usage:                "locks, leaders and status of a lockd cluster",
		Description:          description,
		Writer:               stdout,
		ErrWriter:            stderr,
		Flags:                globalFlags(),
		Commands:             commands(),
		EnableBashCompletion: true,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErrorf("unknown command %q: lockctl --help lists the commands", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		// run prints errors and picks the exit code; cli must do neither.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &exitErr{code: exitUsage, err: err}
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = app.OnUsageError
	}
	return app
}

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "endpoints", Usage: "nodes of the cluster as host:port, comma-separated", EnvVars: []string{"LOCKD_ENDPOINTS"}},
		&cli.StringFlag{Name: "ca", Usage: "the cluster CA certificate (PEM)", EnvVars: []string{"LOCKD_CA"}},
		&cli.StringFlag{Name: "cert", Usage: "this client's certificate (PEM), issued by the cluster CA", EnvVars: []string{"LOCKD_CERT"}},
		&cli.StringFlag{Name: "key", Usage: "this client's private key (PEM)", EnvVars: []string{"LOCKD_KEY"}},
		&cli.StringFlag{Name: "config", Usage: "a client config file (JSON: endpoints, ca, cert, key), as \"lockd dev\" writes; the flags above override it", EnvVars: []string{"LOCKD_CONFIG"}},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object per line, for scripts", EnvVars: []string{"LOCKD_JSON"}},
		&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (0: wait for a lock as long as it takes; other commands 30s)", EnvVars: []string{"LOCKD_TIMEOUT"}},
		&cli.BoolFlag{Name: "debug", Usage: "also print the client library's own log lines (retries, reconnects) on stderr", EnvVars: []string{"LOCKD_DEBUG"}},
	}
}

// clientConfig builds the client configuration from --config and the
// flags (flags win).
func clientConfig(c *cli.Context) (client.Config, error) {
	var cfg client.Config
	if path := c.String("config"); path != "" {
		var err error
		if cfg, err = client.LoadConfigFile(path); err != nil {
			return cfg, &exitErr{code: exitUsage, err: err}
		}
	}
	if c.IsSet("endpoints") {
		cfg.Endpoints = nil
		for _, e := range c.StringSlice("endpoints") {
			for _, part := range strings.Split(e, ",") {
				if part = strings.TrimSpace(part); part != "" {
					cfg.Endpoints = append(cfg.Endpoints, part)
				}
			}
		}
	}
	for flag, field := range map[string]*string{"ca": &cfg.CAFile, "cert": &cfg.CertFile, "key": &cfg.KeyFile} {
		if c.IsSet(flag) {
			*field = c.String(flag)
		}
	}
	if len(cfg.Endpoints) == 0 && cfg.CAFile == "" {
		return cfg, usageErrorf("no cluster given: set --endpoints and --ca, --cert, --key (LOCKD_ENDPOINTS, LOCKD_CA, LOCKD_CERT, LOCKD_KEY), or --config (LOCKD_CONFIG) as \"lockd dev\" prints")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, &exitErr{code: exitUsage, err: err}
	}
	// lockctl says what happened in its own words (and exit code); the
	// library's log lines (retries, reconnects) only with --debug.
	cfg.Logger = slog.New(slog.DiscardHandler)
	if c.Bool("debug") {
		cfg.Logger = slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
	}
	return cfg, nil
}

// connect builds the configuration and connects.
func connect(ctx context.Context, c *cli.Context) (*client.Client, error) {
	cfg, err := clientConfig(c)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(ctx, cfg)
	if err != nil {
		if !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, &exitErr{code: exitUsage, err: err} // certificates that do not load
		}
		return nil, err
	}
	return cl, nil
}

// defaultTimeout bounds commands that do not wait for a lock.
const defaultTimeout = 30e9

// opContext returns the context of a command that does not wait for a lock.
// dialOp connects for one operation bounded by --timeout. done closes the
// client, then ends the context.
func dialOp(c *cli.Context) (ctx context.Context, cl *client.Client, done func(), err error) {
	ctx, cancel := opContext(c)
	cl, err = connect(ctx, c)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, cl, func() { cl.Close(); cancel() }, nil
}

func opContext(c *cli.Context) (context.Context, context.CancelFunc) {
	d := c.Duration("timeout")
	if d <= 0 {
		d = defaultTimeout
	}
	return context.WithTimeout(c.Context, d)
}

// tlsProblem turns a connection that failed on certificates, which the
// client reports as an unavailable cluster, into what it is: the client's
// configuration does not fit the cluster (exit 64, bad usage).
func tlsProblem(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var what string
	switch {
	case strings.Contains(msg, "(remote): tls:"):
		// The node ended the handshake: it did not accept this client.
		what = "the client certificate was refused by the cluster: give a certificate and key (--cert, --key) issued by the cluster's CA, as lockd certs client NAME makes"
	case strings.Contains(msg, "tls: failed to verify certificate"), strings.Contains(msg, "x509: certificate signed by unknown authority"):
		what = "the server's certificate is not signed by this CA: check --ca (the cluster's CA certificate) and that the endpoints are that cluster's nodes"
	case strings.Contains(msg, "x509: certificate has expired"):
		what = "a certificate has expired or is not yet valid: issue new ones"
	case strings.Contains(msg, "x509: certificate is valid for"):
		what = "the server's certificate does not name the address used: check --endpoints"
	default:
		return err
	}
	if i := strings.Index(msg, "tls: "); i >= 0 {
		detail := msg[i:]
		if j := strings.IndexAny(detail, "\n)"); j >= 0 {
			detail = detail[:j]
		}
		what += " (" + detail + ")"
	}
	return &exitErr{code: exitUsage, err: errors.New(what), noHint: true}
}
