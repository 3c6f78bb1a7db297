package main

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// stopSignals are the signals that stop lockctl acquire and elect: Ctrl-C,
// kill's default, and a closed terminal.
var stopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// sigWatch turns the stop signals into a cancelled context and keeps every
// one of them for CMD, once it runs.
//
// While lockctl waits for a lock, the first signal cancels ctx: the
// client then takes the wait out of the lock's queue, and lockctl closes
// its session before it exits with 128+N, as shells report a process
// stopped by signal N. While CMD runs, each signal is passed on to CMD
// (fwd), and lockctl exits with 128+N once CMD has exited and the lock is
// released.
type sigWatch struct {
	ctx    context.Context
	cancel context.CancelFunc
	ch     chan os.Signal
	fwd    chan os.Signal
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	first os.Signal
}

func watchSignals(parent context.Context) *sigWatch {
	w := &sigWatch{ch: make(chan os.Signal, 8), fwd: make(chan os.Signal, 8), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(parent)
	signal.Notify(w.ch, stopSignals...)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case sig := <-w.ch:
				w.mu.Lock()
				if w.first == nil {
					w.first = sig
				}
				w.mu.Unlock()
				w.cancel()
				select {
				case w.fwd <- sig:
				default: // CMD already has signals it has not been given
				}
			case <-w.done:
				return
			}
		}
	}()
	return w
}

// signal returns the first stop signal received, or nil.
func (w *sigWatch) signal() os.Signal {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first
}

// stop stops watching; signals then act as they would without lockctl's
// handler.
func (w *sigWatch) stop() {
	signal.Stop(w.ch)
	close(w.done)
	w.wg.Wait()
	w.cancel()
}

// signalCode is the exit code of a process stopped by sig: 128+N.
func signalCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return exitError
}

// signalName is sig's name as kill -l spells it: SIGINT, SIGTERM, SIGHUP.
func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return sig.String()
}
