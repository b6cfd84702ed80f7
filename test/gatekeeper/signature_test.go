package gatekeeper_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/open-policy-agent/frameworks/constraint/pkg/client"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/pack"
)

// templateClient is a constraint-framework client with one shipped
// template and a deny constraint of it for every namespace, asking env's
// provider through Gatekeeper's external-data client.
func templateClient(t *testing.T, env *testenv.Env, template, kind string) *client.Client {
	t.Helper()
	c := externalDataClient(t, env)
	ctx := context.Background()
	if _, err := c.AddTemplate(ctx, pack.ReadTemplate(t, filepath.Join(pack.Root, "templates", template+".yaml"))); err != nil {
		t.Fatal(err)
	}
	constraint := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": kind,
		"metadata": map[string]any{"name": "all"},
		"spec":     map[string]any{"enforcementAction": "deny", "match": map[string]any{"kinds": []any{map[string]any{"apiGroups": []any{""}, "kinds": []any{"Pod"}}}}},
	}}
	if _, err := c.AddConstraint(ctx, constraint); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignaturesDecideThroughMoatImageSignature(t *testing.T) {
	key := testenv.NewKeySigner(t)
	env := testenv.Start(t, testenv.WithSignatureKeys(testenv.Defaults(), key.PubFile))
	c := templateClient(t, env, "moatimagesignature", "MoatImageSignature")

	digestRef := func(ref, d string) name.Digest {
		r, err := name.NewDigest(strings.Split(ref, ":1")[0]+"@"+d, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	signedRef, sd := env.PushSample(t, "sig/signed:1", "clean")
	key.Sign(t, digestRef(signedRef, sd))
	unsignedRef, _ := env.PushSample(t, "sig/unsigned:1", "high")
	tamperedRef, td := env.PushSample(t, "sig/tampered:1", "low")
	key.Sign(t, digestRef(tamperedRef, td))
	testenv.Tamper(t, digestRef(tamperedRef, td))

	if v := verdict(t, c, "apps", signedRef); !strings.Contains(v, "not verified yet") {
		t.Errorf("before the check finished: %s; want denied as pending (never verified)", v)
	}
	settled := func(image string, want func(string) bool) string {
		deadline := time.Now().Add(20 * time.Second)
		for {
			v := verdict(t, c, "apps", image)
			if want(v) || time.Now().After(deadline) {
				return v
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if v := settled(signedRef, func(v string) bool { return v == "allow" }); v != "allow" {
		t.Errorf("signed by the trusted key: %s", v)
	}
	if v := settled(unsignedRef, func(v string) bool { return !strings.Contains(v, "not verified yet") }); !strings.Contains(v, "no valid signature: no signatures found") {
		t.Errorf("unsigned: %s", v)
	}
	if v := settled(tamperedRef, func(v string) bool { return !strings.Contains(v, "not verified yet") }); !strings.HasPrefix(v, "deny: ") || !strings.Contains(v, "no signature matches") {
		t.Errorf("tampered: %s", v)
	}
}
