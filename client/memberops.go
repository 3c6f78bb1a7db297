package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// AddMember and RemoveMember make one node change in every group, each
// group on its own and several at once. They are idempotent: every step
// reads the group's membership first and skips what is done already, so a
// run interrupted (a timeout, a master change, ^C) is finished by running
// it again. A step refused because another change is on its way
// (ErrChangePending), or a promotion refused because the learner is behind
// (ErrNotCaughtUp), is retried with backoff until ctx ends.

// MemberStep is one thing AddMember or RemoveMember did, or found done, in
// one group; Report receives each as it happens.
type MemberStep struct {
	Group uint32 `json:"group"`
	Node  uint32 `json:"node"`
	// Step is "added-learner", "promoted", "removed", "in-force", or
	// "already-voter" / "already-removed" when nothing was left to do.
	Step string `json:"step"`
	// Master is the group's master that answered.
	Master uint32 `json:"master"`
}

// MemberOptions tunes AddMember and RemoveMember.
type MemberOptions struct {
	// Parallel is how many groups are worked on at once (default 8).
	Parallel int
	// Report, if set, is called for every step, from several goroutines
	// one at a time.
	Report func(MemberStep)
}

const (
	memberBackoffMin = 50 * time.Millisecond
	memberBackoffMax = time.Second
	// memberBadChanges bounds how often in a row a group may refuse a step
	// as not applying before the operation gives up: the change raced with
	// another, and the next read should show it; more is a real conflict.
	memberBadChanges = 3
)

// AddMember adds node id at addr to every group: as a learner first, then,
// once it has caught up with the group, as a voter, and waits until every
// change is in force. The node must already run (lockd run --join) and be
// reachable at addr from the members.
func (c *Client) AddMember(ctx context.Context, id uint32, addr string, o MemberOptions) error {
	if id == 0 || addr == "" {
		return fmt.Errorf("lockd: add member: want a node id from 1 on and its HOST:PORT")
	}
	return c.everyGroup(ctx, id, o, func(ctx context.Context, g uint32, report func(string, uint32)) error {
		return c.addInGroup(ctx, g, id, addr, report)
	})
}

// RemoveMember removes node id from every group and waits until every
// removal is in force. The removed node learns it and stops (lockd exits
// with code 8).
func (c *Client) RemoveMember(ctx context.Context, id uint32, o MemberOptions) error {
	if id == 0 {
		return fmt.Errorf("lockd: remove member: want a node id from 1 on")
	}
	return c.everyGroup(ctx, id, o, func(ctx context.Context, g uint32, report func(string, uint32)) error {
		return c.removeInGroup(ctx, g, id, report)
	})
}

// everyGroup runs f for every group, o.Parallel at once, and returns the
// errors of the groups that failed.
func (c *Client) everyGroup(ctx context.Context, node uint32, o MemberOptions, f func(ctx context.Context, g uint32, report func(step string, master uint32)) error) error {
	par := o.Parallel
	if par <= 0 {
		par = 8
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, par)
	for g := range c.groups {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			mu.Lock()
			errs = append(errs, fmt.Errorf("group %d: not started: %w", g, ctx.Err()))
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			report := func(step string, master uint32) {}
			if o.Report != nil {
				report = func(step string, master uint32) {
					mu.Lock()
					defer mu.Unlock()
					o.Report(MemberStep{Group: uint32(g), Node: node, Step: step, Master: master})
				}
			}
			if err := f(ctx, uint32(g), report); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// addInGroup makes id a voter of g, step by step.
func (c *Client) addInGroup(ctx context.Context, g, id uint32, addr string, report func(string, uint32)) error {
	b := backoffFrom(memberBackoffMin)
	bad, did := 0, false
	for {
		gm, err := c.GroupMembers(ctx, g)
		if err != nil {
			return err
		}
		m, ok := gm.member(id)
		var ch MemberChange
		switch {
		case ok && m.Addr != "" && m.Addr != addr:
			return fmt.Errorf("lockd: group %d: node %d is a member at %s, not %s: a node's address changes only by replacing it under a new id", g, id, m.Addr, addr)
		case ok && m.Voter && !gm.Pending:
			report(doneStep(did, "already-voter"), gm.Master)
			return nil
		case ok && m.Voter:
			// Promoted; wait until it is in force.
		case !ok:
			ch = MemberChange{Op: ChangeAddLearner, Node: id, Addr: addr}
		default:
			ch = MemberChange{Op: ChangePromote, Node: id}
		}
		if ch.Op != 0 {
			proposed, err := c.tryChange(ctx, g, ch, &bad)
			if err != nil {
				return err
			}
			if proposed {
				did = true
				if ch.Op == ChangeAddLearner {
					report("added-learner", gm.Master)
				} else {
					report("promoted", gm.Master)
				}
				b = backoffFrom(memberBackoffMin)
				continue
			}
		}
		if err := b.wait(ctx); err != nil {
			return fmt.Errorf("lockd: group %d: node %d not a voter in force yet: %w", g, id, err)
		}
	}
}

// removeInGroup takes id out of g and waits until that is in force.
func (c *Client) removeInGroup(ctx context.Context, g, id uint32, report func(string, uint32)) error {
	b := backoffFrom(memberBackoffMin)
	bad, did := 0, false
	for {
		gm, err := c.GroupMembers(ctx, g)
		if err != nil {
			return err
		}
		_, ok := gm.member(id)
		switch {
		case !ok && !gm.Pending:
			report(doneStep(did, "already-removed"), gm.Master)
			return nil
		case ok:
			proposed, err := c.tryChange(ctx, g, MemberChange{Op: ChangeRemove, Node: id}, &bad)
			if err != nil {
				return err
			}
			if proposed {
				did = true
				report("removed", gm.Master)
				b = backoffFrom(memberBackoffMin)
				continue
			}
		}
		if err := b.wait(ctx); err != nil {
			return fmt.Errorf("lockd: group %d: removal of node %d not in force yet: %w", g, id, err)
		}
	}
}

// tryChange proposes ch in g. proposed is true when the master took it;
// false with a nil error is a refusal worth waiting out: another change in
// force-to-be (ErrChangePending), a learner not caught up yet
// (ErrNotCaughtUp), or an invalid answer, which a membership read racing a
// change can cause, up to memberBadChanges in a row (*bad counts them).
func (c *Client) tryChange(ctx context.Context, g uint32, ch MemberChange, bad *int) (proposed bool, err error) {
	err = c.ChangeMembership(ctx, g, ch)
	switch {
	case err == nil:
		*bad = 0
		return true, nil
	case errors.Is(err, ErrChangePending), errors.Is(err, ErrNotCaughtUp):
		return false, nil
	case isCode(err, CodeInvalid):
		if *bad++; *bad >= memberBadChanges {
			return false, err
		}
		return false, nil
	}
	return false, err
}

// doneStep names the last step of a group: "in-force" when this call made
// a change, else what it found (already).
func doneStep(did bool, already string) string {
	if did {
		return "in-force"
	}
	return already
}

func isCode(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// memberBackoff doubles a pause from memberBackoffMin to memberBackoffMax.
type memberBackoff struct{ d time.Duration }

func backoffFrom(d time.Duration) *memberBackoff { return &memberBackoff{d: d} }

func (b *memberBackoff) wait(ctx context.Context) error {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(2*b.d, memberBackoffMax)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
