package lookup

import (
	"strings"
	"testing"
)

func TestNamespacedKeys(t *testing.T) {
	for key, want := range map[string]string{
		"registry.example/app:v1":                                                               "registry.example/app:v1",
		"moat.ns.v1:team-a/default/:registry.example/app:v1":                                    "moat.ns.v1:team-a/default/:registry.example/app:v1",
		"moat.ns.v1:team-a/builder/regcred,mirror:app":                                          "moat.ns.v1:team-a/builder/regcred,mirror:docker.io/library/app:latest",
		"moat.ns.v1:team-a/default/regcred:registry:5000/app@sha256:" + strings.Repeat("a", 64): "moat.ns.v1:team-a/default/regcred:registry:5000/app@sha256:" + strings.Repeat("a", 64),
	} {
		ref, scope, err := ParseKey(key)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		if got := flightKey(ref, scope); got != want {
			t.Errorf("%s: flight key %s, want %s", key, got, want)
		}
	}
	a, sa, _ := ParseKey("moat.ns.v1:team-a/default/regcred:registry.example/app:v1")
	b, sb, _ := ParseKey("moat.ns.v1:team-b/default/regcred:registry.example/app:v1")
	if flightKey(a, sa) == flightKey(b, sb) {
		t.Error("two namespaces share a resolution")
	}
	for _, bad := range []string{
		"moat.ns.v2:team-a/default/:app",                   // a later form
		"moat.ns.v1:team-a/default:app",                    // two parts
		"moat.ns.v1:Team-A/default/:app",                   // not a namespace name
		"moat.ns.v1:team-a/default/reg cred:app",           // not a Secret name
		"moat.ns.v1:team-a//:app",                          // no ServiceAccount
		"moat.ns.v1:team-a/default/,:app",                  // an empty Secret name
		"moat.ns.v1:team-a/default/",                       // no image
		"moat.ns.v1:team-a/default/:UPPER/app",             // a bad image
		"moat.ns.v1:../default/:app",                       // a path
		"moat.ns.v1:team-a/default/regcred:app:v1:extra:x", // a bad image
	} {
		if _, _, err := ParseKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzKey(f *testing.F) {
	f.Add("moat.ns.v1:team-a/default/regcred:registry.example/app:v1")
	f.Add("registry.example/app@sha256:" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, k string) {
		ref, scope, err := ParseKey(k)
		if err != nil {
			return
		}
		// A key that parses names one resolution, stable when parsed again.
		fk := flightKey(ref, scope)
		ref2, scope2, err := ParseKey(fk)
		if err != nil {
			t.Fatalf("%q parsed, its flight key %q does not: %v", k, fk, err)
		}
		if flightKey(ref2, scope2) != fk {
			t.Fatalf("%q: flight key %q is not stable", k, fk)
		}
	})
}
