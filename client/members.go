package client

import (
	"context"
	"fmt"

	"github.com/lockd/lockd/internal/wire"
)

// Membership (issue 11). Every group has its own configuration in its log:
// the nodes that vote, and learners that receive the log but do not vote
// yet. A change is made one at a time per group, and comes into force a
// fixed number of slots after it is chosen. These calls need the admin
// role (an access rule granting "admin" on the prefix ""); without it the
// error matches ErrPermission.

// GroupMember is one node of a group's configuration.
type GroupMember struct {
	ID   uint32 `json:"id"`
	Addr string `json:"addr,omitempty"`
	// Voter is false for a learner, which catches up but does not vote.
	Voter bool `json:"voter"`
	// Progress is the highest commit index the group's master heard from
	// the node: how far a learner has caught up.
	Progress uint64 `json:"progress"`
	// Up says whether the master reaches the node.
	Up bool `json:"up"`
}

// GroupMembers is one group's membership as its master knows it.
type GroupMembers struct {
	Group uint32 `json:"group"`
	// Master is the node that answered: the group's master.
	Master uint32 `json:"master"`
	// Commit is the master's commit index; From the first slot the newest
	// configuration governs. Pending is true while From is above Commit:
	// the newest configuration is not yet in force.
	Commit  uint64        `json:"commit"`
	From    uint64        `json:"from"`
	Pending bool          `json:"pending"`
	Members []GroupMember `json:"members"`
}

// member returns the member id, if the group lists it.
func (gm *GroupMembers) member(id uint32) (GroupMember, bool) {
	for _, m := range gm.Members {
		if m.ID == id {
			return m, true
		}
	}
	return GroupMember{}, false
}

// ChangeOp is the kind of a membership change.
type ChangeOp uint8

// Membership change kinds, each about one node.
const (
	// ChangeAddLearner adds a node that receives the log but does not vote.
	ChangeAddLearner ChangeOp = ChangeOp(wire.ChangeAddLearner)
	// ChangePromote makes a learner that has caught up a voter.
	ChangePromote ChangeOp = ChangeOp(wire.ChangePromote)
	// ChangeRemove takes a node (voter or learner) out of the group.
	ChangeRemove ChangeOp = ChangeOp(wire.ChangeRemove)
)

func (op ChangeOp) String() string {
	switch op {
	case ChangeAddLearner:
		return "add-learner"
	case ChangePromote:
		return "promote"
	case ChangeRemove:
		return "remove"
	}
	return fmt.Sprintf("change-%d", uint8(op))
}

// MemberChange is one membership change of one group.
type MemberChange struct {
	Op   ChangeOp
	Node uint32
	// Addr is the node's HOST:PORT, for ChangeAddLearner.
	Addr string
}

// GroupMembers reads group's membership from its master.
func (c *Client) GroupMembers(ctx context.Context, group uint32) (*GroupMembers, error) {
	if int(group) >= c.groups {
		return nil, fmt.Errorf("lockd: members of group %d: the cluster has groups 0 to %d", group, c.groups-1)
	}
	x, err := c.invoke(ctx, &wire.Msg{Type: wire.TypeMembers, Group: group}, callOpts{group: int(group)})
	if err != nil {
		return nil, fmt.Errorf("lockd: members of group %d: %w", group, err)
	}
	m := &x.resp
	if m.Code != wire.CodeOK {
		return nil, fmt.Errorf("lockd: members of group %d: %w", group, errorFor(m, nil))
	}
	gm := &GroupMembers{Group: group, Master: m.Node, Commit: m.Slot, From: m.Epoch, Pending: m.Flags&wire.FlagPending != 0}
	for _, it := range m.Members {
		gm.Members = append(gm.Members, GroupMember{ID: it.ID, Addr: it.Addr, Voter: it.Voter, Progress: it.Progress, Up: it.Up})
	}
	return gm, nil
}

// Members reads every group's membership, in group order.
func (c *Client) Members(ctx context.Context) ([]GroupMembers, error) {
	out := make([]GroupMembers, 0, c.groups)
	for g := range c.groups {
		gm, err := c.GroupMembers(ctx, uint32(g))
		if err != nil {
			return nil, err
		}
		out = append(out, *gm)
	}
	return out, nil
}

// ChangeMembership asks group's master to propose one change. It returns
// once the change is queued, not once it is in force (read GroupMembers
// until Pending is false). A refusal matches ErrChangePending (another
// change is on its way: retry later), ErrNotCaughtUp (promote later) or
// ErrPermission, or is an *Error with CodeInvalid when the change does not
// apply to the group's members.
func (c *Client) ChangeMembership(ctx context.Context, group uint32, ch MemberChange) error {
	if int(group) >= c.groups {
		return fmt.Errorf("lockd: %s node %d in group %d: the cluster has groups 0 to %d", ch.Op, ch.Node, group, c.groups-1)
	}
	req := &wire.Msg{Type: wire.TypeChangeMembers, Group: group, ChangeOp: uint8(ch.Op), Members: []wire.MemberItem{{ID: ch.Node, Addr: ch.Addr}}}
	x, err := c.invoke(ctx, req, callOpts{group: int(group)})
	if err != nil {
		return fmt.Errorf("lockd: %s node %d in group %d: %w", ch.Op, ch.Node, group, err)
	}
	if m := &x.resp; m.Code != wire.CodeOK {
		return fmt.Errorf("lockd: %s node %d in group %d: %w", ch.Op, ch.Node, group, errorFor(m, nil))
	}
	return nil
}
