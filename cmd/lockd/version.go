package main

import "runtime/debug"

// vcsRevision is the VCS revision the binary was built from, with "+dirty"
// for uncommitted changes and the commit's time: "revision REV (TIME)", or
// "" when the build did not record it (-buildvcs=false, no git).
func vcsRevision() string {
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
