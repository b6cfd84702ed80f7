package gatekeeper_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/frameworks/constraint/pkg/client"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/pack"
)

// scanClient is a constraint-framework client with the shipped
// MoatImageScan template and the dev and prod constraints, asking env's
// provider (embedded Grype) through Gatekeeper's external-data client.
func scanClient(t *testing.T, env *testenv.Env) *client.Client {
	t.Helper()
	c := externalDataClient(t, env)
	ctx := context.Background()
	if _, err := c.AddTemplate(ctx, pack.ReadTemplate(t, filepath.Join(pack.Root, "templates", "moatimagescan.yaml"))); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"dev", "prod"} {
		if _, err := c.AddConstraint(ctx, pack.ReadConstraint(t, filepath.Join(pack.Root, "constraints", "namespaces", ns, "image-scan.yaml"))); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func pod(ns, image string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "app", "namespace": ns},
		"spec":     map[string]any{"containers": []any{map[string]any{"name": "app", "image": image}}},
	}}
}

// verdict is "allow", or the enforcement action and messages of the
// violations.
func verdict(t *testing.T, c *client.Client, ns, image string) string {
	t.Helper()
	return review(t, c, pod(ns, image))
}

// review is verdict for any object.
func review(t *testing.T, c *client.Client, obj *unstructured.Unstructured) string {
	t.Helper()
	resp, err := c.Review(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range resp.Results() {
		out = append(out, r.EnforcementAction+": "+r.Msg)
	}
	if len(out) == 0 {
		return "allow"
	}
	return strings.Join(out, "\n")
}

func TestScanStatusesDecidePerNamespace(t *testing.T) {
	env := testenv.Start(t, testenv.ScanDefaults())
	c := scanClient(t, env)
	critical, _ := env.PushSample(t, "app/critical:1", "critical")
	clean, _ := env.PushSample(t, "app/clean:1", "clean")
	broken, _ := env.PushSample(t, "app/broken:1", "unreadable")

	// Not scanned yet: pending is refused in prod, admitted in dev.
	if v := verdict(t, c, "prod", clean); !strings.HasPrefix(v, "deny: ") || !strings.Contains(v, "report_not_available") {
		t.Errorf("prod, scan pending: %s", v)
	}
	if v := verdict(t, c, "dev", clean); v != "allow" {
		t.Errorf("dev, scan pending: %s", v)
	}

	wait := func(image string) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if !strings.Contains(verdict(t, c, "prod", image), "report_not_available") {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: still pending", image)
	}
	for _, im := range []string{critical, clean, broken} {
		wait(im)
	}
	if v := verdict(t, c, "prod", clean); v != "allow" {
		t.Errorf("prod, clean image once scanned: %s", v)
	}
	if v := verdict(t, c, "prod", critical); !strings.HasPrefix(v, "deny: ") || !strings.Contains(v, "critical") {
		t.Errorf("prod, critical finding: %s", v)
	}
	if v := verdict(t, c, "dev", critical); !strings.HasPrefix(v, "warn: ") {
		t.Errorf("dev, critical finding (warn only): %s", v)
	}
	if v := verdict(t, c, "prod", broken); !strings.HasPrefix(v, "deny: ") || !strings.Contains(v, "its scan failed: ") || !strings.Contains(v, "could not be read") {
		t.Errorf("prod, scan failed: %s", v)
	}
	if v := verdict(t, c, "dev", broken); v != "allow" {
		t.Errorf("dev, scan failed: %s", v)
	}
	t.Logf("prod, critical: %s", verdict(t, c, "prod", critical))
}

// With credentials: namespace the template asks about each image with a
// namespaced key (the pod's namespace, ServiceAccount and imagePullSecrets):
// the provider decides it as it decides the plain key, and resolves it
// apart from every other namespace's (one registry HEAD per scope).
func TestNamespacedKeysDecideLikePlainOnes(t *testing.T) {
	env := testenv.Start(t, testenv.ScanDefaults())
	c := externalDataClient(t, env)
	ctx := context.Background()
	if _, err := c.AddTemplate(ctx, pack.ReadTemplate(t, filepath.Join(pack.Root, "templates", "moatimagescan.yaml"))); err != nil {
		t.Fatal(err)
	}
	con := pack.ReadConstraint(t, filepath.Join(pack.Root, "constraints", "namespaces", "prod", "image-scan.yaml"))
	must(t, unstructured.SetNestedField(con.Object, "namespace", "spec", "parameters", "credentials"))
	must(t, unstructured.SetNestedStringSlice(con.Object, []string{"prod", "prod-b"}, "spec", "match", "namespaces"))
	if _, err := c.AddConstraint(ctx, con); err != nil {
		t.Fatal(err)
	}
	critical, _ := env.PushSample(t, "ns/critical:1", "critical")
	clean, _ := env.PushSample(t, "ns/clean:1", "clean")
	tenantPod := func(ns, image string) *unstructured.Unstructured {
		p := pod(ns, image)
		must(t, unstructured.SetNestedField(p.Object, "builder", "spec", "serviceAccountName"))
		must(t, unstructured.SetNestedSlice(p.Object, []any{map[string]any{"name": "regcred"}}, "spec", "imagePullSecrets"))
		return p
	}
	until := func(p *unstructured.Unstructured, want string) string {
		deadline := time.Now().Add(30 * time.Second)
		for {
			v := review(t, c, p)
			if strings.Contains(v, want) || (want == "allow" && v == "allow") || time.Now().After(deadline) {
				return v
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if v := until(tenantPod("prod", clean), "allow"); v != "allow" {
		t.Errorf("a clean image through a namespaced key: %s", v)
	}
	if v := until(tenantPod("prod", critical), "critical"); !strings.HasPrefix(v, "deny: ") || !strings.Contains(v, "critical") {
		t.Errorf("a critical image through a namespaced key: %s", v)
	}
	heads := env.Registry.ManifestHeads()
	if v := until(tenantPod("prod-b", clean), "allow"); v != "allow" {
		t.Errorf("the clean image from another namespace: %s", v)
	}
	if env.Registry.ManifestHeads() == heads {
		t.Error("another namespace's key was answered from the first namespace's resolution")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The prod constraints as shipped (image-scan.yaml with 72h of grace for
// criticals, and its warning twin) through the real constraint framework
// and a provider whose database gains a critical for an image it had
// accepted: the pod is admitted with a warning naming the CVE and when its
// grace ends; a new image carrying an old critical is denied; and once
// the grace has ended the pod is denied, naming the CVE.
func TestANewCriticalIsWarnedDuringItsGraceAndDeniedAfter(t *testing.T) {
	cfg := testenv.ScanDefaults()
	cfg.Scan.Scans.Policy.Max = map[string]int{} // the constraints decide
	env := testenv.Start(t, cfg)
	c := externalDataClient(t, env)
	ctx := context.Background()
	if _, err := c.AddTemplate(ctx, pack.ReadTemplate(t, filepath.Join(pack.Root, "templates", "moatimagescan.yaml"))); err != nil {
		t.Fatal(err)
	}
	prod := pack.ReadConstraint(t, filepath.Join(pack.Root, "constraints", "namespaces", "prod", "image-scan.yaml"))
	for _, con := range []*unstructured.Unstructured{prod, pack.ReadConstraint(t, filepath.Join(pack.Root, "constraints", "namespaces", "prod", "image-scan-grace.yaml"))} {
		if _, err := c.AddConstraint(ctx, con); err != nil {
			t.Fatal(err)
		}
	}
	settled := func(image string, done func(string) bool) string {
		t.Helper()
		var v string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if v = verdict(t, c, "prod", image); done(v) {
				return v
			}
		}
		t.Fatalf("%s: %s", image, v)
		return v
	}
	clean, _ := env.PushSample(t, "app/web:1", "clean")
	settled(clean, func(v string) bool { return v == "allow" })

	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond))) // dates have whole seconds
	next := filepath.Join(t.TempDir(), "later.db")
	if err := testenv.WriteSampleDB(next, true); err != nil {
		t.Fatal(err)
	}
	if err := env.DB.Load(next); err != nil {
		t.Fatal(err)
	}
	named := testenv.LaterID + " (critical, moat-sample-high-free 1.0.0, fixed in 1.1.0)"
	v := settled(clean, func(v string) bool { return v != "allow" })
	if !strings.HasPrefix(v, "warn: ") || strings.Contains(v, "deny: ") || !strings.Contains(v, "in its grace period") || !strings.Contains(v, named+" until ") {
		t.Errorf("a new critical on a running image, inside its grace: %s", v)
	}

	// A new image carrying a critical the database already had: no grace.
	other, _ := env.PushSample(t, "app/other:1", "critical")
	if v := settled(other, func(v string) bool { return !strings.Contains(v, "report_not_available") }); !strings.HasPrefix(v, "deny: ") ||
		!strings.Contains(v, "MOAT-TEST-0001 (critical, moat-sample-critical 1.0.0, fixed in 2.0.0)") || strings.Contains(v, "grace") {
		t.Errorf("a new image with an old critical: %s", v)
	}

	// The grace ends (a constraint with one second of it).
	must(t, unstructured.SetNestedField(prod.Object, "1s", "spec", "parameters", "grace", "critical"))
	if _, err := c.AddConstraint(ctx, prod); err != nil {
		t.Fatal(err)
	}
	if v := settled(clean, func(v string) bool { return strings.Contains(v, "deny: ") }); !strings.Contains(v, "exceeds maxFindings: "+named) {
		t.Errorf("after its grace: %s", v)
	}
}
