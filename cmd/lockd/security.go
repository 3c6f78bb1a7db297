package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockd/lockd/internal/server"
	"github.com/urfave/cli/v2"
)

// securityFlags are `lockd run`'s access rules and admin port options.
func securityFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "acl", Usage: "access rules `FILE` (JSON; README, Security): who may lock, read and admin which lock-name prefixes, and per-identity limits; reloaded on SIGHUP", EnvVars: []string{"LOCKD_ACL"}},
		&cli.BoolFlag{Name: "admin-pprof", Usage: "serve /debug/pprof on the admin port (unauthenticated: off it for a non-loopback --admin)", Value: true, EnvVars: []string{"LOCKD_ADMIN_PPROF"}},
	}
}

// warnOpenAdmin warns when the unauthenticated admin port listens beyond
// loopback.
func warnOpenAdmin(logger *slog.Logger, addr string, pprof bool) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return
	}
	if pprof {
		logger.Warn("the admin port listens beyond loopback and is unauthenticated: anyone who reaches it can read the status page and metrics and run /debug/pprof (CPU profiles, goroutine dumps); bind it to 127.0.0.1 or pass --admin-pprof=false", "admin", addr)
		return
	}
	logger.Warn("the admin port listens beyond loopback and is unauthenticated: anyone who reaches it can read the status page and metrics", "admin", addr)
}

// reloadRulesOnHUP reloads the access rules on every SIGHUP until ctx ends.
// A bad file is refused and logged; the rules in force stay.
func reloadRulesOnHUP(ctx context.Context, s *server.Server, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := s.ReloadRules(); err != nil {
					logger.Error("access rules not reloaded", "err", err)
				}
			}
		}
	}()
}
