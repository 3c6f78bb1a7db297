package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lockd/lockd/internal/pki"
	"github.com/urfave/cli/v2"
)

// Certificate file names in a certs dir. `lockd run --certs DIR --id N` reads
// ca.crt, node-N.crt and node-N.key; ca.key stays with whoever issues
// certificates and need not be on the nodes.
func nodeCertBase(id uint32) string     { return "node-" + strconv.FormatUint(uint64(id), 10) }
func clientCertBase(name string) string { return "client-" + name }

const certsFilesHelp = `FILES (in --dir):
   ca.crt, ca.key             the cluster CA (lockd certs init); keep ca.key off the nodes if you can
   node-N.crt, node-N.key     node N (lockd certs node N); lockd run --id N --certs DIR reads these and ca.crt
   client-NAME.crt/.key       a client (lockd certs client NAME); lockctl --ca ca.crt --cert ... --key ...
`

func certsDirFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "dir", Usage: "certificate directory", Value: "certs", EnvVars: []string{"LOCKD_CERTS"}}
}

func certsCommand() *cli.Command {
	return &cli.Command{
		Name:  "certs",
		Usage: "make the cluster CA and issue node and client certificates",
		Description: "Every node and client of a cluster trusts one CA. Make it once, then a certificate per node and per client:\n\n" +
			"   lockd certs init --dir certs\n" +
			"   lockd certs node 1 --dir certs --host 10.0.0.1 --host db1.example.com\n" +
			"   lockd certs client alice --dir certs\n\n" + certsFilesHelp,
		Subcommands: []*cli.Command{
			{
				Name:      "init",
				Usage:     "make a new cluster CA (ca.crt, ca.key)",
				UsageText: "lockd certs init [--dir DIR] [--force]",
				Description: "Makes a cluster CA in --dir. It refuses to replace an existing CA, because every certificate\n" +
					"it issued would stop working; --force replaces it anyway.\n\n" + certsFilesHelp,
				Flags: []cli.Flag{
					certsDirFlag(),
					&cli.BoolFlag{Name: "force", Usage: "replace an existing CA (every certificate it issued stops working)"},
					&cli.StringFlag{Name: "name", Usage: "CA common name", Value: "lockd cluster CA"},
					&cli.DurationFlag{Name: "validity", Usage: "how long the CA (and so every certificate it issues) is valid", Value: 10 * 365 * 24 * time.Hour},
				},
				Action: certsInit,
			},
			{
				Name:      "node",
				Usage:     "issue the certificate of node ID (node-ID.crt, node-ID.key)",
				UsageText: "lockd certs node ID [--dir DIR] [--host HOST]...",
				Description: "Issues node ID's certificate from the CA in --dir. --host lists the IP addresses and DNS names\n" +
					"clients reach the node at (default 127.0.0.1 and localhost). Peers identify each other by node ID,\n" +
					"so a node's certificate only serves that node ID.\n\n" + certsFilesHelp,
				Flags: []cli.Flag{
					certsDirFlag(),
					&cli.StringSliceFlag{Name: "host", Usage: "an IP address or DNS name of the node (repeat; default 127.0.0.1 and localhost)", EnvVars: []string{"LOCKD_CERT_HOSTS"}},
				},
				Action: certsNode,
			},
			{
				Name:      "client",
				Usage:     "issue a client certificate (client-NAME.crt, client-NAME.key)",
				UsageText: "lockd certs client NAME [--ou UNIT ...] [--dir DIR]",
				Description: "Issues a certificate for client NAME from the CA in --dir, for lockctl and the Go client.\n" +
					"NAME is the client's identity (the certificate's CommonName); each --ou adds an OrganizationalUnit,\n" +
					"a role that access rules can name (\"units\": [\"UNIT\"] in the --acl file of lockd run).\n\n" + certsFilesHelp,
				Flags: []cli.Flag{
					certsDirFlag(),
					&cli.StringSliceFlag{Name: "ou", Usage: "an OrganizationalUnit (role) for access rules to name (repeat for several)"},
				},
				Action: certsClient,
			},
		},
	}
}

func certsInit(c *cli.Context) error {
	if c.Args().Present() {
		return usageErrorf("certs init takes no arguments, got %q", c.Args().First())
	}
	dir := c.String("dir")
	certPath, keyPath := filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile)
	existing := false
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			existing = true
		}
	}
	if existing && !c.Bool("force") {
		return setupErrorf("a cluster CA already exists in %s; every certificate it issued would stop working if it were replaced. "+
			"Issue certificates from it with `lockd certs node N --dir %s`, or replace it with --force", dir, dir)
	}
	ca, err := pki.NewCA(c.String("name"), c.Duration("validity"))
	if err != nil {
		return setupErrorf("certs init: %v", err)
	}
	if existing {
		for _, p := range []string{certPath, keyPath} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return setupErrorf("certs init --force: %v", err)
			}
		}
	}
	if err := ca.Save(dir); err != nil {
		return setupErrorf("certs init: %v", err)
	}
	fmt.Fprintf(c.App.Writer, "wrote %s and %s (valid until %s)\nnext: lockd certs node 1 --dir %s (one per node), lockd certs client NAME --dir %s\n",
		certPath, keyPath, ca.Cert.NotAfter.Format("2006-01-02"), dir, dir)
	return nil
}

// loadCA loads the CA of dir and says how to make one when there is none.
func loadCA(dir string) (*pki.CA, error) {
	if _, err := os.Stat(filepath.Join(dir, pki.CACertFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, setupErrorf("no cluster CA in %s: make one with `lockd certs init --dir %s`", dir, dir)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return nil, setupErrorf("%v", err)
	}
	return ca, nil
}

func parseNodeID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, usageErrorf("node id %q: want a number from 1 on (the --id of `lockd run`)", s)
	}
	return uint32(n), nil
}

func certsNode(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("certs node takes one argument, the node id: lockd certs node 1 --dir DIR")
	}
	id, err := parseNodeID(c.Args().First())
	if err != nil {
		return err
	}
	dir := c.String("dir")
	ca, err := loadCA(dir)
	if err != nil {
		return err
	}
	hosts := c.StringSlice("host")
	certPEM, keyPEM, err := ca.IssueNode(strconv.FormatUint(uint64(id), 10), hosts)
	if err != nil {
		return usageErrorf("%v", err)
	}
	base := nodeCertBase(id)
	if err := pki.WriteKeyPair(dir, base, certPEM, keyPEM); err != nil {
		return setupErrorf("%v", err)
	}
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	fmt.Fprintf(c.App.Writer, "wrote %s.crt and %s.key for node %d (hosts %v)\n",
		filepath.Join(dir, base), filepath.Join(dir, base), id, hosts)
	return nil
}

func checkClientName(name string) error {
	if name == "" || len(name) > 64 {
		return usageErrorf("client name %q: want 1 to 64 characters", name)
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return usageErrorf("client name %q: use letters, digits, '-', '_' and '.' only (it becomes a file name)", name)
		}
	}
	if name[0] == '.' {
		return usageErrorf("client name %q must not start with '.'", name)
	}
	return nil
}

func certsClient(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("certs client takes one argument, the client name: lockd certs client alice --dir DIR")
	}
	name := c.Args().First()
	if err := checkClientName(name); err != nil {
		return err
	}
	dir := c.String("dir")
	ca, err := loadCA(dir)
	if err != nil {
		return err
	}
	units := c.StringSlice("ou")
	for _, u := range units {
		if err := pki.CheckUnit(u); err != nil {
			return usageErrorf("--ou: %v", err)
		}
	}
	certPEM, keyPEM, err := ca.IssueClient(name, units...)
	if err != nil {
		return usageErrorf("%v", err)
	}
	base := filepath.Join(dir, clientCertBase(name))
	if err := pki.WriteKeyPair(dir, clientCertBase(name), certPEM, keyPEM); err != nil {
		return setupErrorf("%v", err)
	}
	roles := ""
	if len(units) > 0 {
		roles = fmt.Sprintf(" (units %s)", strings.Join(units, ", "))
	}
	fmt.Fprintf(c.App.Writer, "wrote %s.crt and %s.key for client %q%s\nuse: lockctl --ca %s --cert %s.crt --key %s.key ...\n",
		base, base, name, roles, filepath.Join(dir, pki.CACertFile), base, base)
	return nil
}
