package main

import (
	"strings"
	"testing"
)

func TestCheckVersion(t *testing.T) {
	a := lockEntry{Version: "1.1.0", Sum: "sha256:a"}
	cases := []struct {
		old, now lockEntry
		amend    bool
		refused  string
	}{
		{lockEntry{}, a, false, ""},
		{a, a, false, ""},
		{a, lockEntry{"1.1.0", "sha256:b"}, false, "raise version"},
		{a, lockEntry{"1.1.0", "sha256:b"}, true, ""},
		{a, lockEntry{"1.2.0", "sha256:b"}, false, ""},
		{a, lockEntry{"1.1.1", "sha256:b"}, false, ""},
		{a, lockEntry{"1.0.9", "sha256:b"}, false, "lower than"},
		{a, lockEntry{"1.10.0", "sha256:b"}, false, ""},
	}
	for _, c := range cases {
		err := checkVersion("moatx", c.old, c.now, c.amend)
		if c.refused == "" && err != nil || c.refused != "" && (err == nil || !strings.Contains(err.Error(), c.refused)) {
			t.Errorf("%v -> %v (amend %v): %v, want refusal %q", c.old, c.now, c.amend, err, c.refused)
		}
	}
}

// The version line is not part of the content: a bump alone is no change.
func TestContentSumIgnoresVersion(t *testing.T) {
	x := []byte("a: 1\n    metadata.gatekeeper.sh/version: 1.0.0\nb: 2\n")
	y := []byte("a: 1\n    metadata.gatekeeper.sh/version: 1.1.0\nb: 2\n")
	z := []byte("a: 1\n    metadata.gatekeeper.sh/version: 1.1.0\nb: 3\n")
	if contentSum(x) != contentSum(y) || contentSum(y) == contentSum(z) {
		t.Fatal("contentSum must ignore the version line and nothing else")
	}
}
