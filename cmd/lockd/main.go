// Command lockd is the lockd server: `lockd run` runs one node of a real
// cluster, `lockd dev` a throw-away local cluster in one process, `lockd
// certs` makes the certificates a cluster runs on, and `lockd restore`
// seeds a new node's data dir from a backup (lockctl snapshot save).
//
// Exit codes (also in `lockd --help`):
//
//	0  stopped cleanly (SIGINT or SIGTERM), or the command succeeded
//	1  the node failed while running (storage or transport error)
//	2  lockd crashed (a Go panic): a bug, please report it with the log
//	3  set-up refused: missing or invalid certificates, a data dir made for
//	   another cluster, node or group count, a CA that already exists
//	4  an address is in use: pick another port
//	5  the data dir lost or damaged durable state (an empty data dir for a
//	   node its peers know, a WAL or MANIFEST that lost synced records, a
//	   checksum failure): the node must be replaced, see README "Operations"
//	6  the disk is full: free space, then start again
//	7  lockd restore: the backup file is damaged, cut short or not a lockd
//	   backup; nothing was written: use another copy
//	64 bad usage: an unknown flag, a missing or malformed argument
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/lockd/lockd/internal/buildinfo"
	"github.com/lockd/lockd/internal/procs"
	"github.com/urfave/cli/v2"
)

// Exit codes; see the package comment. They are part of the interface:
// scripts and the end-to-end tests branch on them.
const (
	exitOK     = 0
	exitFailed = 1
	// exitUsage is sysexits' EX_USAGE, not 2: the Go runtime exits with 2
	// on a panic, and a crashed node must not read as bad usage (systemd
	// restarts a crash, not a usage error).
	exitUsage    = 64
	exitSetup    = 3
	exitAddrBusy = 4
	exitDamaged  = 5
	exitDiskFull = 6
	// exitRemoved: the node was removed from the cluster (lockctl members
	// remove / replace) and stops for good; systemd must not restart it.
	exitRemoved = 8
)

const exitCodesHelp = `EXIT CODES:
   0  stopped cleanly (SIGINT or SIGTERM), or the command succeeded
   1  the node failed while running (storage or transport error)
   2  lockd crashed (a Go panic): a bug, please report it with the log
   3  set-up refused: missing or invalid certificates, a data dir made for
      another cluster, node or group count, a data dir locked by another
      process or not writable, a CA that already exists
   4  an address is in use: pick another port (--listen, --admin, --base-port)
   5  the data dir lost or damaged durable state (an empty data dir for a
      node its peers know, a WAL or MANIFEST that lost synced records, a
      checksum failure): the node refuses to serve; replace it (README
      "Operations": lockd run --recover-from-peers on an empty data dir)
   6  the disk is full: free space, then start again
   7  lockd restore: the backup file is damaged, cut short or not a lockd
      backup; nothing was written: use another copy (3: the data dir is not
      empty, or --groups differs from the backup's)
   8  the node was removed from the cluster (lockctl members remove or
      replace) and stops for good; started again on the same data dir it
      exits with 8 at once. To bring the machine back, start it as a new
      node: a new --id, an empty data dir, --join, then lockctl members add
  64  bad usage: an unknown flag, a missing or malformed argument
`

// version is set at link time (-ldflags "-X main.version=v1.2.3"); without
// it the module version from the build info is used.
var version = ""

func versionString() string {
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	if rev := buildinfo.Revision(); rev != "" {
		v += " " + rev
	}
	return fmt.Sprintf("%s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func main() {
	// More scheduler slots than cores, so that goroutines blocked in fsync
	// do not hold up the network (see internal/procs).
	procs.Tune(os.Getenv("GOMAXPROCS"))
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run runs lockd with args (args[0] is the program name) and returns the
// exit code. It never calls os.Exit, so tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.Run(interspersed(args))
	if err == nil {
		return exitOK
	}
	code := exitFailed
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := strings.TrimSpace(err.Error()); msg != "" {
		fmt.Fprintf(stderr, "lockd: %s\n", msg)
	}
	return code
}

// interspersed moves the flags that follow the positional argument of
// `certs node ID` and `certs client NAME` in front of it, because urfave/cli
// (like the flag package) stops parsing flags at the first argument, and
// `lockd certs node 1 --dir certs` is how people write it.
func interspersed(args []string) []string {
	if len(args) < 4 || args[1] != "certs" || (args[2] != "node" && args[2] != "client") {
		return args
	}
	takesValue := map[string]bool{"dir": true, "host": true, "ou": true}
	var flags, pos []string
	rest := args[3:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			pos = append(pos, rest[i:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			if name := strings.TrimLeft(a, "-"); !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
				flags = append(flags, rest[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	out := append([]string{}, args[:3]...)
	return append(append(out, flags...), pos...)
}

// exitError carries an exit code with an error, so that errors.Is and
// errors.As still see the cause.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErrorf(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

func setupErrorf(format string, args ...any) error {
	return withCode(exitSetup, fmt.Errorf(format, args...))
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "lockd",
		Usage: "distributed lock and master-election service",
		Description: "lockd runs the nodes of a lockd cluster. Start here:\n\n" +
			"   lockd dev                         a local 3-node cluster in one process, with throw-away certificates\n" +
			"   lockd certs init --dir certs      a cluster CA, then `lockd certs node N` and `lockd certs client NAME`\n" +
			"   lockd run --id 1 --peers ...      one node of a real cluster\n" +
			"   lockd restore --from FILE ...     seed a new node's data dir from a backup (lockctl snapshot save)\n\n" +
			"Every flag has an environment fall-back, shown in each command's --help.",
		Version:               versionString(),
		Writer:                stdout,
		ErrWriter:             stderr,
		CustomAppHelpTemplate: cli.AppHelpTemplate + "\n" + exitCodesHelp,
		// Errors come back from Run and main maps them to exit codes.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			runCommand(),
			restoreCommand(),
			devCommand(),
			certsCommand(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					if c.Args().Present() {
						return usageErrorf("version takes no arguments, got %q", c.Args().First())
					}
					fmt.Fprintf(c.App.Writer, "lockd %s\n", versionString())
					return nil
				},
			},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErrorf("unknown command %q: run `lockd --help` for the commands", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
	// lockd --version prints what lockd version prints.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintf(c.App.Writer, "lockd %s\n", versionString()) }
	app.OnUsageError = onUsageError
	for _, cmd := range app.Commands {
		setUsageError(cmd)
	}
	return app
}

// setUsageError makes every command report flag errors the same way: one
// line, a pointer to --help, and exit code 64 (bad usage).
func setUsageError(cmd *cli.Command) {
	cmd.OnUsageError = onUsageError
	if cmd.CustomHelpTemplate == "" && len(cmd.Subcommands) == 0 {
		cmd.CustomHelpTemplate = cli.CommandHelpTemplate + "\n" + exitCodesHelp
	}
	for _, sub := range cmd.Subcommands {
		setUsageError(sub)
	}
}

func onUsageError(c *cli.Context, err error, isSubcommand bool) error {
	name := "lockd"
	if c.Command != nil && c.Command.FullName() != "" {
		name = "lockd " + c.Command.FullName()
	}
	return usageErrorf("%v (see `%s --help`)", err, name)
}
