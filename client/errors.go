package client

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/lockd/lockd/internal/wire"
)

// Sentinel errors. Every error the package returns that means one of these
// matches it with errors.Is, whether it is the sentinel itself, an *Error or
// a wrapped error.
var (
	// ErrLockHeld means TryAcquire found the lock held by another session
	// (or in its lock-delay, or with others queued ahead). Wait for it with
	// Acquire, or try again later.
	ErrLockHeld = errors.New("the lock is held by another session: wait for it with Acquire or try again later")
	// ErrLockLost means the lock can no longer be trusted: its session
	// expired or closed, keep-alives failed for too long, or it was
	// released. Stop using what the lock guards and acquire it again.
	ErrLockLost = errors.New("the lock was lost: stop using what it guards and acquire it again")
	// ErrSessionExpired means the session is over (expired on the cluster,
	// kept alive too late, or closed): its locks are gone. Open a new
	// session.
	ErrSessionExpired = errors.New("the session is over and its locks are gone: open a new session")
	// ErrNoMaster means the lock's group had no master for as long as the
	// client retried (an election is under way). Retry shortly.
	ErrNoMaster = errors.New("the group has no master right now (an election is under way): retry shortly")
	// ErrUnavailable means the cluster could not be reached, or stayed
	// overloaded or undecided, for as long as the client retried. Check the
	// endpoints and that a majority of the nodes run.
	ErrUnavailable = errors.New("the cluster is unavailable: check the endpoints and that a majority of the nodes run")
	// ErrPermission means the node refused the request for the identity of
	// this client's certificate: the session belongs to another identity, or
	// an access rule (lockd run --acl) refuses it. The message names the
	// owner or the rule. Retrying does not help.
	ErrPermission = errors.New("permission denied")
	// ErrClosed means the Client was closed.
	ErrClosed = errors.New("the client is closed")
	// ErrChangePending means a group refused a membership change because
	// another one is in flight or not yet in force. Retry once it is
	// (AddMember and RemoveMember do).
	ErrChangePending = errors.New("another membership change is in progress in the group: retry when it is in force")
	// ErrNotCaughtUp means a group refused to promote a learner that is
	// still too far behind its master. Retry once it has caught up.
	ErrNotCaughtUp = errors.New("the new node has not caught up with the group yet: retry once it has")
)

// errSessionClosed is a session's error after Session.Close.
var errSessionClosed = fmt.Errorf("%w (it was closed)", ErrSessionExpired)

// Code says why a node refused a request; it is the Code of an *Error.
type Code uint16

// Codes a node answers with. They keep the protocol's numbers, so that a
// Code from a newer node still compares equal.
const (
	CodeWouldBlock     Code = 2   // the lock is held; matches ErrLockHeld
	CodeNotFound       Code = 3   // the session neither holds nor waits for the lock
	CodeBadToken       Code = 4   // the session holds the lock under another token
	CodeSessionUnknown Code = 5   // the session is gone; matches ErrSessionExpired
	CodeLimit          Code = 6   // a limit (name length, metadata size, counts) was exceeded
	CodeInvalid        Code = 7   // a malformed argument (empty name, negative duration)
	CodeModeConflict   Code = 8   // held or awaited in the other mode (shared/exclusive)
	CodePermission     Code = 10  // another identity's session, or an access rule; matches ErrPermission
	CodeNotMaster      Code = 100 // no node serves the group; matches ErrNoMaster
	CodeOverloaded     Code = 101 // the node stayed overloaded; matches ErrUnavailable
	CodeOutcomeUnknown Code = 102 // the cluster did not decide in time; matches ErrUnavailable
	CodeBadRequest     Code = 103 // the node could not parse the request (a version mismatch?)
	CodeUnavailable    Code = 104 // the node is starting or stopping; matches ErrUnavailable
	CodeInternal       Code = 106 // a bug or a storage failure on the node
	CodeChangePending  Code = 107 // another membership change is in progress; matches ErrChangePending
	CodeNotCaughtUp    Code = 108 // the learner to promote is behind; matches ErrNotCaughtUp
)

var codeNames = map[Code]string{
	CodeWouldBlock: "would-block", CodeNotFound: "not-found", CodeBadToken: "bad-token",
	CodeSessionUnknown: "session-unknown", CodeLimit: "limit", CodeInvalid: "invalid",
	CodeModeConflict: "mode-conflict", CodePermission: "permission", CodeNotMaster: "not-master", CodeOverloaded: "overloaded",
	CodeOutcomeUnknown: "outcome-unknown", CodeBadRequest: "bad-request", CodeUnavailable: "unavailable",
	CodeInternal: "internal", CodeChangePending: "change-pending", CodeNotCaughtUp: "not-caught-up",
}

// String returns the code's name, such as "bad-token".
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return "code-" + strconv.Itoa(int(c))
}

// Error is a request a node refused. Code says why, Message says it in words
// (from the node), Node is the node that answered (0 if unknown).
type Error struct {
	Code    Code
	Message string
	Node    uint32

	is error // the sentinel this error matches, if any
}

func (e *Error) Error() string {
	s := e.Code.String()
	if e.Node != 0 {
		s = "node " + strconv.FormatUint(uint64(e.Node), 10) + " answered " + s
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether e means target, one of the sentinel errors.
func (e *Error) Is(target error) bool { return e.is != nil && target == e.is }

// errorFor turns a refusal into an *Error. lost is the sentinel that a
// NotFound or BadToken means for the operation (ErrLockLost for Release),
// or nil.
func errorFor(m *wire.Msg, lost error) error {
	e := &Error{Code: Code(m.Code), Message: m.Err, Node: m.Node}
	switch m.Code {
	case wire.CodeWouldBlock:
		e.is = ErrLockHeld
	case wire.CodeSessionUnknown:
		e.is = ErrSessionExpired
	case wire.CodeNotFound, wire.CodeBadToken:
		e.is = lost
	case wire.CodePermission:
		e.is = ErrPermission
	case wire.CodeNotMaster:
		e.is = ErrNoMaster
	case wire.CodeOverloaded, wire.CodeOutcomeUnknown, wire.CodeUnavailable:
		e.is = ErrUnavailable
	case wire.CodeChangePending:
		e.is = ErrChangePending
	case wire.CodeNotCaughtUp:
		e.is = ErrNotCaughtUp
	}
	return e
}
