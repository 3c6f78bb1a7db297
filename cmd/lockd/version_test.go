package main

import (
	"strings"
	"testing"
)

// lockd --version prints what lockd version prints, not a usage error.
func TestVersionFlag(t *testing.T) {
	code, out, errOut := lockd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "lockd ") {
		t.Fatalf("lockd version: exit %d, %q %q", code, out, errOut)
	}
	code2, out2, errOut2 := lockd(t, "--version")
	if code2 != 0 || out2 != out {
		t.Fatalf("lockd --version: exit %d, %q %q; want %q like lockd version", code2, out2, errOut2, out)
	}
}
