// Package ratelog rate-limits repeated log lines. Whatever a remote party
// can make a node log again and again (a malformed frame, a refused
// certificate, a full backlog) goes through a Limiter, so that a hostile
// or broken client cannot fill the disk or drown other lines.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxKeys bounds the keys a Limiter remembers; past it they are all
// forgotten at once (bounded memory against a party that varies keys).
const maxKeys = 4096

// Limiter lets a repeated line through at most once per interval per key,
// and says how many were held back since. The zero value is not usable:
// use New.
type Limiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]*state
}

type state struct {
	last    time.Time
	dropped int
}

// New returns a Limiter that logs each key at most once per every.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, now: time.Now, seen: map[string]*state{}}
}

// Warn logs msg at level Warn for key unless one was logged less than
// every ago; the next line logged for key carries "suppressed", the count
// held back.
func (l *Limiter) Warn(log *slog.Logger, key, msg string, args ...any) {
	l.Log(log, slog.LevelWarn, key, msg, args...)
}

// Log is Warn at another level. A nil Limiter logs every line (for a
// partly built owner, as tests make).
func (l *Limiter) Log(log *slog.Logger, level slog.Level, key, msg string, args ...any) {
	if l == nil {
		log.Log(context.Background(), level, msg, args...)
		return
	}
	now := l.now()
	l.mu.Lock()
	st := l.seen[key]
	if st == nil {
		if len(l.seen) >= maxKeys {
			clear(l.seen)
		}
		st = &state{}
		l.seen[key] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < l.every {
		st.dropped++
		l.mu.Unlock()
		return
	}
	dropped := st.dropped
	st.last, st.dropped = now, 0
	l.mu.Unlock()
	if dropped > 0 {
		args = append(args, "suppressed", dropped)
	}
	log.Log(context.Background(), level, msg, args...)
}
