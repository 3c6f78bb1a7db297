package paxos

import (
	"errors"
	"fmt"
)

// ErrOverloaded is returned by Propose when the group's queue is full. It is
// retryable: the command was not queued.
var ErrOverloaded = errors.New("paxos: group queue is full, retry later")

// ErrTooLarge is returned by Propose for a command that cannot fit a slot.
// It is final: the command must be made smaller.
var ErrTooLarge = errors.New("paxos: command too large")

// ErrUnknownGroup is returned for a group id outside the node's groups.
var ErrUnknownGroup = errors.New("paxos: unknown group")

// NotMasterError says that this node is not the group's master, so the command
// was not (or will not be) proposed by it. Hint names the node believed to be
// master, or zero when none is known. The command may be retried there with
// the same id.
type NotMasterError struct {
	Group GroupID
	Hint  NodeID
}

func (e *NotMasterError) Error() string {
	if e.Hint == 0 {
		return fmt.Sprintf("paxos: group %d has no known master, retry later", e.Group)
	}
	return fmt.Sprintf("paxos: not the master of group %d, retry at node %d", e.Group, e.Hint)
}

// IsNotMaster reports whether err is a NotMasterError, and returns its hint.
func IsNotMaster(err error) (NodeID, bool) {
	var nm *NotMasterError
	if errors.As(err, &nm) {
		return nm.Hint, true
	}
	return 0, false
}
