package server

import (
	"fmt"

	"github.com/lockd/lockd/internal/wire"
	"github.com/lockd/lockd/paxos"
)

// policy is the node's access rules and per-identity limits; a reload
// swaps it whole.
type policy struct {
	acl    *ACL
	limits IdentityLimits
	per    map[string]IdentityLimits
	path   string
}

func (p *policy) limitsFor(name string) IdentityLimits {
	if l, ok := p.per[name]; ok {
		return l
	}
	return p.limits
}

func newPolicy(path string, base IdentityLimits) (*policy, error) {
	p := &policy{acl: &ACL{}, limits: base, path: path}
	if path == "" {
		return p, nil
	}
	acl, rf, err := LoadRules(path)
	if err != nil {
		return nil, err
	}
	p.acl = acl
	if rf.Limits != nil {
		p.limits = *rf.Limits
	}
	p.per = rf.PerIdentity
	return p, nil
}

// ReloadRules reads the access rules file again (SIGHUP). A bad file is
// refused with its line and reason, and the rules in force stay.
func (s *Server) ReloadRules() error {
	old := s.policy.Load()
	if old.path == "" {
		return fmt.Errorf("no access rules file to reload: start the node with --acl FILE")
	}
	p, err := newPolicy(old.path, s.baseLimits())
	if err != nil {
		return fmt.Errorf("%w; the rules in force (hash %s) stay", err, old.acl.Hash())
	}
	s.policy.Store(p)
	s.log.Info("access rules reloaded", "file", p.path, "rules", len(p.acl.rules), "hash", p.acl.Hash(), "was", old.acl.Hash())
	return nil
}

// RulesHash is the digest of the access rules in force ("none" without a
// file); every node of a cluster should show the same.
func (s *Server) RulesHash() string { return s.policy.Load().acl.Hash() }

func (s *Server) baseLimits() IdentityLimits {
	if s.cfg.IdentityLimits != nil {
		return *s.cfg.IdentityLimits
	}
	return DefaultIdentityLimits()
}

func permission(format string, args ...any) *wire.Msg {
	return fail(wire.CodePermission, format, args...)
}

// checkRule refuses the request unless the rules let the stream's identity
// do action on name.
func (s *Server) checkRule(cs *clientStream, action Action, name string) *wire.Msg {
	d := s.policy.Load().acl.Check(cs.who, action, name)
	if d.Allowed {
		return nil
	}
	return permission("permission denied: %s", d.Why)
}

// sessionOwner is the owner of session id in group g by this node's table.
func (s *Server) sessionOwner(g paxos.GroupID, id uint64) (owner string, ok bool) {
	if int(g) >= len(s.groups) {
		return "", false
	}
	gs := s.groups[g]
	gs.mu.Lock()
	si, ok := gs.table.Session(id)
	gs.mu.Unlock()
	return si.Owner, ok
}

// checkOwner refuses a request under another identity's session, unless
// adminName is set and the rules give the caller admin over it: then admin
// is true and the action is logged. The lock table checks the owner again
// when the command is applied, so a session opened after this check is
// covered too.
func (s *Server) checkOwner(cs *clientStream, g paxos.GroupID, session uint64, adminName *string, what string) (admin bool, bad *wire.Msg) {
	owner, ok := s.sessionOwner(g, session)
	if !ok || owner == "" || owner == cs.who.Name {
		return false, nil
	}
	if adminName != nil {
		d := s.policy.Load().acl.Check(cs.who, ActionAdmin, *adminName)
		if d.Allowed {
			s.log.Warn("admin action on another identity's session", "admin", cs.who.Name, "action", what,
				"group", g, "session", session, "owner", owner, "lock", *adminName, "rule", d.Why)
			return true, nil
		}
		return false, permission("permission denied: session %d belongs to %s; you are %s (%s)", session, owner, cs.who.Name, d.Why)
	}
	return false, permission("permission denied: session %d belongs to %s; you are %s", session, owner, cs.who.Name)
}

// authorize applies the rules that do not depend on a session: node
// certificates, and the action each request type needs on its name.
func (s *Server) authorize(cs *clientStream, req *wire.Msg) *wire.Msg {
	if req.Type == wire.TypeHello {
		return nil
	}
	if cs.who.Name == "" {
		return permission("permission denied: the client certificate has no CommonName, so it names no identity")
	}
	switch req.Type {
	case wire.TypeAcquire:
		return s.checkRule(cs, ActionLock, req.Name)
	case wire.TypeValidate, wire.TypeLockStatus, wire.TypeWatch:
		return s.checkRule(cs, ActionRead, req.Name)
	case wire.TypeSnapshot:
		// A backup holds every session and lock of the cluster.
		return s.checkRule(cs, ActionAdmin, "")
	case wire.TypeMembers, wire.TypeChangeMembers:
		// Membership decides who votes: admin over the whole namespace.
		return s.checkRule(cs, ActionAdmin, "")
	case wire.TypeClusterStatus:
		if s.policy.Load().acl.file {
			return s.checkRule(cs, ActionAdmin, "")
		}
	}
	if cs.who.Node {
		// Requests without a name: a node certificate needs a rule that
		// names it for any action at all.
		if d := s.policy.Load().acl.Check(cs.who, ActionLock, ""); !d.Allowed {
			if d2 := s.policy.Load().acl.Check(cs.who, ActionRead, ""); !d2.Allowed {
				return permission("permission denied: %s", d.Why)
			}
		}
	}
	return nil
}
