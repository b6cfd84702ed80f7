package config

import (
	"testing"

	"github.com/sigstore/cosign/v2/pkg/cosign"
)

func TestIdentityFlag(t *testing.T) {
	var f identityFlag
	for _, ok := range []string{
		"issuer=https://token.actions.githubusercontent.com,subject=https://github.com/acme/app/.github/workflows/r.yml@refs/tags/v1",
		`issuer-regexp=^https://accounts\.example\.com$,subject-regexp=^ci-[0-9]{1,3}@example\.com$`,
	} {
		if err := f.Set(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	want := []cosign.Identity{
		{Issuer: "https://token.actions.githubusercontent.com", Subject: "https://github.com/acme/app/.github/workflows/r.yml@refs/tags/v1"},
		{IssuerRegExp: `^https://accounts\.example\.com$`, SubjectRegExp: `^ci-[0-9]{1,3}@example\.com$`},
	}
	if len(f) != 2 || f[0] != want[0] || f[1] != want[1] {
		t.Errorf("parsed %+v", f)
	}
	for _, bad := range []string{"issuer=x", "subject=y", "owner=x,subject=y", "", "issuer=x,subject="} {
		var g identityFlag
		if err := g.Set(bad); err == nil {
			t.Errorf("%q accepted: %+v", bad, g)
		}
	}
}
