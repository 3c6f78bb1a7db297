package lease

import (
	"errors"
	"strconv"
)

// Code says how a command ended. The numeric values never change meaning.
type Code uint8

// The result codes. CodeOK and CodeQueued are successes; every other code comes with an
// *Error from Result.Err that says what failed and what to do.
const (
	// CodeOK: the command did what it asked (granted, released, opened, closed, ...).
	CodeOK Code = 0
	// CodeQueued: the acquire waits in the lock's queue; a later EventGranted grants it.
	CodeQueued Code = 1
	// CodeWouldBlock: the acquire did not ask to wait, and the lock is held, has
	// waiters ahead, or is in its lock-delay.
	CodeWouldBlock Code = 2
	// CodeNotFound: the session neither holds (release) nor waits for (cancel) the lock.
	CodeNotFound Code = 3
	// CodeBadToken: the session holds the lock, under another token than the one given.
	CodeBadToken Code = 4
	// CodeSessionUnknown: no such session; it was closed or expired, or never opened.
	CodeSessionUnknown Code = 5
	// CodeLimit: the command would exceed one of the Limits; Error.Field names it.
	CodeLimit Code = 6
	// CodeInvalid: the command is malformed (empty name, negative duration, unknown
	// op, invalid limits); Error.Field names the field.
	CodeInvalid Code = 7
	// CodeModeConflict: the session already holds or waits for the lock in the other
	// mode. Upgrades and downgrades are not supported: release first.
	CodeModeConflict Code = 8
	// CodeStale: the position is not after the last one applied, so the command was
	// already applied (a replay); the table is unchanged.
	CodeStale Code = 9
	// CodePermission: the session belongs to another identity (Command.Caller is not
	// its owner), and the command is not an admin override the table accepts.
	CodePermission Code = 10
)

var codeNames = [...]string{
	CodeOK:             "ok",
	CodeQueued:         "queued",
	CodeWouldBlock:     "would-block",
	CodeNotFound:       "not-found",
	CodeBadToken:       "bad-token",
	CodeSessionUnknown: "session-unknown",
	CodeLimit:          "limit",
	CodeInvalid:        "invalid",
	CodeModeConflict:   "mode-conflict",
	CodeStale:          "stale",
	CodePermission:     "permission",
}

// String returns the code's name.
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

// EventKind says what changed for one holder or waiter of one lock.
type EventKind uint8

// The event kinds. Every token a table issues appears in exactly one EventGranted, and
// every grant ends in exactly one EventReleased or EventExpired.
const (
	// EventGranted: Session now holds Name with Token (immediately or after waiting).
	EventGranted EventKind = 1
	// EventReleased: Session gave up Token, by release or by closing the session.
	EventReleased EventKind = 2
	// EventExpired: Session lost Token because the session expired; the lock-delay of
	// the grant applies.
	EventExpired EventKind = 3
	// EventCanceled: Session no longer waits for Name (cancel, close or expiry).
	EventCanceled EventKind = 4
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventGranted:
		return "granted"
	case EventReleased:
		return "released"
	case EventExpired:
		return "expired"
	case EventCanceled:
		return "canceled"
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is one change to one lock, for the server to push to waiters and watchers.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// Name is the lock concerned.
	Name string
	// Session is the holder or waiter concerned.
	Session uint64
	// Token is the grant concerned; 0 for EventCanceled.
	Token uint64
	// Shared is the mode of the grant or of the canceled request.
	Shared bool
}

// Result is the outcome of one Apply. Events are in the order the changes happened.
type Result struct {
	// Code says how the command ended.
	Code Code
	// Session is the ID of the session OpOpenSession created; 0 otherwise.
	Session uint64
	// Token is, for OpAcquire with CodeOK, the grant's token (a new one, or the one the
	// session already held); for OpRelease with CodeOK, the released token; for
	// OpCancelWait with CodeNotFound, the token the session holds if it was granted the
	// lock before the cancel arrived (0 if it does not hold it).
	Token uint64
	// Events lists every grant, release, expiry and cancel the command caused,
	// including grants to waiters of other sessions. Grants made because a lock-delay
	// ended at the command's time come first, before the op's own events; so a session
	// whose expiry is that command may be granted a lock and lose it in one Result.
	Events []Event
	err    *Error
}

// Err returns nil for CodeOK and CodeQueued, and otherwise an *Error.
func (r Result) Err() error {
	if r.err == nil {
		return nil
	}
	return r.err
}

// Error describes a failed command: what failed, for which session and lock, and what
// the caller can do. Branch on Code; show Error() to people.
type Error struct {
	// Code says what kind of failure this is.
	Code Code
	// Op is the operation that failed.
	Op Op
	// Session is the session the command named (0 if none).
	Session uint64
	// Name is the lock the command named (empty if none).
	Name string
	// Field names the Limits field (CodeLimit) or Command field (CodeInvalid) at fault.
	Field string
	// Until is, for CodeWouldBlock, the unix time in nanoseconds at which the lock's
	// lock-delay ends; 0 when the lock is simply held.
	Until int64
	// Detail says what failed and what to do, in words.
	Detail string
}

// Error formats e as "lease: OP [of NAME] by session N: DETAIL".
func (e *Error) Error() string {
	s := "lease: " + e.Op.String()
	if e.Name != "" {
		s += " " + strconv.Quote(e.Name)
	}
	if e.Session != 0 {
		s += " by session " + strconv.FormatUint(e.Session, 10)
	}
	return s + ": " + e.Detail
}

// CodeOf returns the Code of a lease error, CodeOK for nil, and CodeInvalid for any
// other error.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInvalid
}

// Errors of the decoders. DecodeCommand and Table.Restore wrap one of them.
var (
	// ErrMalformed: the bytes are truncated, corrupt, oversize or not canonical.
	ErrMalformed = errors.New("lease: malformed input")
	// ErrVersion: the bytes were written by a newer format version than this build
	// reads; upgrade this node.
	ErrVersion = errors.New("lease: unsupported format version")
)
