// Package buildinfo says which revision a lockd binary was built from, for
// the version commands of lockd and lockctl.
package buildinfo

import "runtime/debug"

// Revision is "revision REV (TIME)", with "+dirty" after REV for a build
// with uncommitted changes, or "" when the build did not record it
// (-buildvcs=false, no git).
func Revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, at, dirty := "", "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if dirty {
		rev += "+dirty"
	}
	if at != "" {
		rev += " (" + at + ")"
	}
	return "revision " + rev
}
