// Package e2e holds lockd's end-to-end tests: they build the real lockd and
// lockctl binaries, make certificates with `lockd certs`, start nodes as
// separate processes on 127.0.0.1, and go through the README walk-through
// with lockctl while killing, stopping and restarting nodes with signals.
//
// The tests are skipped with -short. Set LOCKD_E2E_KEEP=1 to keep the
// processes' logs after a passing run; a failing run prints their tails.
package e2e
