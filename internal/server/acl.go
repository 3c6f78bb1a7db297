package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/lockd/lockd/internal/pki"
)

// Identity is who a client connection speaks for: the CommonName of its
// verified client certificate, with its OrganizationalUnits so that a rule
// can name a role. A node certificate (pki.NodeIDFromCert) is not a client
// identity unless a rule names it.
type Identity struct {
	Name  string
	Units []string
	Node  bool
}

func identityOf(cert *x509.Certificate, name string) Identity {
	id := Identity{Name: name}
	if cert != nil {
		id.Units = cert.Subject.OrganizationalUnit
		_, id.Node = pki.NodeIDFromCert(cert)
	}
	return id
}

// Action is what a rule allows or denies.
type Action string

// The actions of the access rules.
const (
	// ActionLock: acquire (shared or exclusive) names under the prefix.
	ActionLock Action = "lock"
	// ActionRead: status, watch and validate names under the prefix.
	ActionRead Action = "read"
	// ActionAdmin: release others' grants of names under the prefix; with the
	// prefix "" also close others' sessions and read the cluster status.
	ActionAdmin Action = "admin"
)

// Rule is one entry of the access rules file.
type Rule struct {
	// Name is shown in every refusal the rule causes.
	Name string `json:"name"`
	// Effect is "allow" or "deny".
	Effect string `json:"effect"`
	// Actions lists "lock", "read", "admin".
	Actions []Action `json:"actions"`
	// Identities lists certificate CommonNames; "*" is every client
	// certificate (not node certificates, which must be named).
	Identities []string `json:"identities,omitempty"`
	// Units lists certificate OrganizationalUnits (roles).
	Units []string `json:"units,omitempty"`
	// Prefixes lists lock-name prefixes; "" is every name.
	Prefixes []string `json:"prefixes"`
}

// RulesFile is the JSON document `lockd run --acl FILE` reads.
type RulesFile struct {
	Rules []Rule `json:"rules"`
	// Limits overrides the per-identity defaults; PerIdentity overrides
	// them for one identity (by CommonName).
	Limits      *IdentityLimits           `json:"limits,omitempty"`
	PerIdentity map[string]IdentityLimits `json:"per_identity_limits,omitempty"`
}

// ACL is the parsed rules; the zero ACL (no file) lets every client
// identity lock and read every name and gives nobody admin.
type ACL struct {
	file  bool
	rules []Rule
	hash  string
}

// Hash is a short digest of the rules in force ("none" without a file), so
// that nodes with different rules can be spotted (lockctl status).
func (a *ACL) Hash() string {
	if a == nil || !a.file {
		return "none"
	}
	return a.hash
}

// LoadRules reads and checks a rules file. Errors name the line and why.
func LoadRules(path string) (*ACL, *RulesFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("access rules: %w", err)
	}
	acl, rf, err := ParseRules(b)
	if err != nil {
		return nil, nil, fmt.Errorf("access rules %s: %w", path, err)
	}
	return acl, rf, nil
}

// ParseRules parses a rules document (see RulesFile).
func ParseRules(b []byte) (*ACL, *RulesFile, error) {
	var rf RulesFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rf); err != nil {
		var se *json.SyntaxError
		var ute *json.UnmarshalTypeError
		off := int64(-1)
		switch {
		case errors.As(err, &se):
			off = se.Offset
		case errors.As(err, &ute):
			off = ute.Offset
		case errors.Is(err, io.ErrUnexpectedEOF):
			off = int64(len(b))
		default:
			off = dec.InputOffset()
		}
		return nil, nil, fmt.Errorf("line %d: %v", lineOf(b, off), err)
	}
	if dec.More() {
		return nil, nil, fmt.Errorf("line %d: trailing data after the rules object", lineOf(b, dec.InputOffset()))
	}
	names := map[string]bool{}
	for i, r := range rf.Rules {
		line := ruleLine(b, i, r.Name)
		bad := func(format string, args ...any) error {
			return fmt.Errorf("line %d: rule %d (%q): %s", line, i+1, r.Name, fmt.Sprintf(format, args...))
		}
		switch {
		case r.Name == "":
			return nil, nil, bad("a rule needs a name, shown in the refusals it causes")
		case names[r.Name]:
			return nil, nil, bad("another rule has the same name")
		case r.Effect != "allow" && r.Effect != "deny":
			return nil, nil, bad("effect is %q, want \"allow\" or \"deny\"", r.Effect)
		case len(r.Actions) == 0:
			return nil, nil, bad("no actions: list some of \"lock\", \"read\", \"admin\"")
		case len(r.Identities) == 0 && len(r.Units) == 0:
			return nil, nil, bad("names no identities or units: use [\"*\"] for every client")
		case len(r.Prefixes) == 0:
			return nil, nil, bad("no prefixes: use [\"\"] for every lock name")
		}
		for _, a := range r.Actions {
			if a != ActionLock && a != ActionRead && a != ActionAdmin {
				return nil, nil, bad("unknown action %q, want \"lock\", \"read\" or \"admin\"", a)
			}
		}
		for _, id := range r.Identities {
			if id == "" {
				return nil, nil, bad("an empty identity")
			}
		}
		names[r.Name] = true
	}
	if rf.Limits != nil {
		if err := rf.Limits.validate(); err != nil {
			return nil, nil, fmt.Errorf("line %d: limits: %v", keyLine(b, `"limits"`), err)
		}
	}
	for name, l := range rf.PerIdentity {
		if err := l.validate(); err != nil {
			return nil, nil, fmt.Errorf("line %d: per_identity_limits %q: %v", keyLine(b, `"`+name+`"`), name, err)
		}
	}
	sum := sha256.Sum256(b)
	return &ACL{file: true, rules: rf.Rules, hash: hex.EncodeToString(sum[:6])}, &rf, nil
}

func lineOf(b []byte, off int64) int {
	if off < 0 || off > int64(len(b)) {
		off = int64(len(b))
	}
	return 1 + bytes.Count(b[:off], []byte("\n"))
}

// ruleLine finds the line of rule i by its name, for error messages.
func ruleLine(b []byte, i int, name string) int {
	if name != "" {
		if k := bytes.Index(b, []byte(`"`+name+`"`)); k >= 0 {
			return lineOf(b, int64(k))
		}
	}
	// Count rule objects: the (i+1)-th "{" after "rules".
	k := bytes.Index(b, []byte(`"rules"`))
	for n := 0; k >= 0 && k < len(b); k++ {
		if b[k] == '{' {
			if n == i {
				return lineOf(b, int64(k))
			}
			n++
		}
	}
	return 1
}

func keyLine(b []byte, key string) int {
	if k := bytes.Index(b, []byte(key)); k >= 0 {
		return lineOf(b, int64(k))
	}
	return 1
}

// matches reports whether r names id.
func (r *Rule) matches(id Identity) bool {
	for _, n := range r.Identities {
		if n == id.Name || (n == "*" && !id.Node) {
			return true
		}
	}
	if id.Node {
		return false
	}
	for _, u := range r.Units {
		if slices.Contains(id.Units, u) {
			return true
		}
	}
	return false
}

// Decision is the outcome of a rules check.
type Decision struct {
	Allowed bool
	// Why names the rule that decided, or says that none applied.
	Why string
}

// Check decides whether id may do action on name. The rule with the
// longest matching prefix decides; at equal length a deny wins. Without a
// file, every client identity may lock and read, and nobody is admin; node
// certificates may do nothing.
func (a *ACL) Check(id Identity, action Action, name string) Decision {
	if a == nil || !a.file {
		if id.Node {
			return Decision{Why: fmt.Sprintf("%s presented a node certificate, which is not a client identity: use a client certificate (lockd certs client NAME)", id.Name)}
		}
		if action == ActionAdmin {
			return Decision{Why: "admin needs an access rules file (lockd run --acl) that grants it"}
		}
		return Decision{Allowed: true}
	}
	best, bestLen := -1, -1
	for i := range a.rules {
		r := &a.rules[i]
		if !slices.Contains(r.Actions, action) || !r.matches(id) {
			continue
		}
		for _, p := range r.Prefixes {
			if !strings.HasPrefix(name, p) {
				continue
			}
			if len(p) > bestLen || (len(p) == bestLen && r.Effect == "deny" && a.rules[best].Effect != "deny") {
				best, bestLen = i, len(p)
			}
		}
	}
	if best < 0 {
		return Decision{Why: fmt.Sprintf("no access rule allows %s to %s %q", id.Name, action, name)}
	}
	r := &a.rules[best]
	if r.Effect == "deny" {
		return Decision{Why: fmt.Sprintf("rule %q denies %s to %s %q", r.Name, id.Name, action, name)}
	}
	return Decision{Allowed: true, Why: fmt.Sprintf("rule %q", r.Name)}
}
