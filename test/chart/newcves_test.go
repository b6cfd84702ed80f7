package chart_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A MoatImageScan with grace gets a twin, enforcementAction warn and
// report: grace, that names the findings in their grace period; one without
// grace gets none. admitRunning anywhere syncs Pods to Gatekeeper.
func TestGraceGetsAWarningTwinAndAdmitRunningSyncsPods(t *testing.T) {
	objs := render(t, "imagePolicy.enabled=true", "imagePolicy.maxFindings.critical=0", "imagePolicy.byNamespace.prod.grace.critical=72h",
		"imagePolicy.byNamespace.dev.defaultPolicy=accept")
	names := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetKind() == "MoatImageScan" {
			names[o.GetName()] = o
		}
	}
	if len(names) != 4 || names["moat-image-scan-prod-grace"] == nil || names["moat-image-scan-grace"] != nil || names["moat-image-scan-dev-grace"] != nil {
		t.Fatalf("constraints %v; want a grace twin for prod only", slices.Sorted(maps.Keys(names)))
	}
	twin, prod := names["moat-image-scan-prod-grace"], names["moat-image-scan-prod"]
	action, _, _ := unstructured.NestedString(twin.Object, "spec", "enforcementAction")
	report, _, _ := unstructured.NestedString(twin.Object, "spec", "parameters", "report")
	grace, _, _ := unstructured.NestedString(twin.Object, "spec", "parameters", "grace", "critical")
	twinNS, _, _ := unstructured.NestedStringSlice(twin.Object, "spec", "match", "namespaces")
	if action != "warn" || report != "grace" || grace != "72h" || !slices.Equal(twinNS, []string{"prod"}) {
		t.Errorf("the twin: %s, report %q, grace %q, namespaces %v", action, report, grace, twinNS)
	}
	if r, ok, _ := unstructured.NestedString(prod.Object, "spec", "parameters", "report"); ok {
		t.Errorf("the enforcing constraint reports %q", r)
	}
	if count(objs, "SyncSet") != 0 {
		t.Error("Pods synced without admitRunning")
	}

	objs = render(t, "imagePolicy.enabled=true", "imagePolicy.byNamespace.prod.admitRunning=true")
	var sync *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "SyncSet" {
			sync = o
		}
	}
	if sync == nil {
		t.Fatal("admitRunning without a SyncSet of Pods")
	}
	gvks, _, _ := unstructured.NestedSlice(sync.Object, "spec", "gvks")
	if len(gvks) != 1 || gvks[0].(map[string]any)["kind"] != "Pod" || gvks[0].(map[string]any)["version"] != "v1" {
		t.Errorf("SyncSet gvks %v", gvks)
	}
}

// volumeSources are the provider Deployment's volumes of one kind, by the
// name they refer to: volumeSources(objs, "secret", "secretName").
func volumeSources(objs []*unstructured.Unstructured, kind, field string) []string {
	vols, _, _ := unstructured.NestedSlice(find(objs, "Deployment", "moat").Object, "spec", "template", "spec", "volumes")
	var out []string
	for _, v := range vols {
		if name, ok, _ := unstructured.NestedString(v.(map[string]any), kind, field); ok {
			out = append(out, name)
		}
	}
	return out
}

// The provider's grace and VEX settings reach `moat serve`, and the VEX
// ConfigMap is mounted where --vex-dir points.
func TestProviderGraceAndVEX(t *testing.T) {
	objs := render(t, "scanner.mode=embedded", "scanner.policy.grace.critical=72h", "scanner.vex.configMap=vex-statements",
		"signatures.enabled=true", "signatures.secret=cosign-trust", "signatures.keys={release.pub}", "signatures.ignoreTlog=true", "scanner.vex.attestations=true")
	a := args(t, objs)
	for _, want := range []string{"--scan-grace=map[critical:72h]", "--vex-dir=/etc/moat/vex", "--vex-attestations"} {
		if !slices.Contains(a, want) {
			t.Errorf("no %s in %v", want, a)
		}
	}
	if !slices.Contains(volumeSources(objs, "configMap", "name"), "vex-statements") {
		t.Error("the VEX ConfigMap is not mounted")
	}
	if out, err := helmErr("template", "moat", "charts/moat", "--kube-version", "1.34.0", "--set", "scanner.mode=embedded", "--set", "scanner.vex.attestations=true"); err == nil ||
		!strings.Contains(out, "signatures.enabled") {
		t.Errorf("VEX attestations without signature trust: %v\n%s", err, out)
	}
}
