package chart_test

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// withoutConstraintsHook drops the constraints hook's own identity (its
// ServiceAccount, ClusterRole and binding, all named <release>-constraints):
// the provider's access is judged without it.
func withoutConstraintsHook(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	return slices.DeleteFunc(slices.Clone(objs), func(o *unstructured.Unstructured) bool {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding":
			return strings.HasSuffix(o.GetName(), "-constraints")
		}
		return false
	})
}

// No constraint is an object of the release: Helm could not map its kind
// before Gatekeeper compiled the template. They are in the ConfigMap the
// hook Jobs apply (after install and upgrade) and delete (before uninstall),
// whose identity may touch constraints and read templates, nothing else.
func TestConstraintsAreAppliedByTheHook(t *testing.T) {
	out := helm(t, "template", "moat", "charts/moat", "-n", "gatekeeper-system", "--kube-version", "1.34.0",
		"--set", "policies.defender.enabled=true", "--set", "imagePolicy.enabled=true", "--set", "nodeScan.enabled=true")
	direct := decode(out, false)
	if n := constraints(direct); n != 0 {
		t.Fatalf("%d constraints rendered as objects of the release; Helm cannot install those", n)
	}
	withHook := decode(out, true)
	if n := constraints(withHook); n < 19 {
		t.Fatalf("only %d constraints in the hook's ConfigMap", n)
	}
	for _, kind := range []string{"MoatImageScan", "MoatNodeVulnerabilities", "MoatPrivileged"} {
		if count(withHook, kind) == 0 {
			t.Errorf("no %s in the hook's ConfigMap", kind)
		}
	}

	hooks := map[string]string{}
	for _, o := range direct {
		if o.GetKind() != "Job" {
			continue
		}
		hooks[o.GetAnnotations()["helm.sh/hook"]] = o.GetName()
		spec, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
		js, _ := yaml.Marshal(spec)
		if spec["serviceAccountName"] != "moat-constraints" {
			t.Errorf("Job %s runs as %v", o.GetName(), spec["serviceAccountName"])
		}
		if !strings.Contains(string(js), "readOnlyRootFilesystem: true") || !strings.Contains(string(js), "--release=moat") {
			t.Errorf("Job %s:\n%s", o.GetName(), js)
		}
	}
	if hooks["post-install,post-upgrade"] != "moat-constraints-apply" || hooks["pre-delete"] != "moat-constraints-delete" {
		t.Errorf("hook Jobs: %v", hooks)
	}

	role := find(direct, "ClusterRole", "moat-constraints")
	if role == nil {
		t.Fatal("no ClusterRole moat-constraints")
	}
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	js, _ := yaml.Marshal(rules)
	want := `- apiGroups:
  - constraints.gatekeeper.sh
  resources:
  - '*'
  verbs:
  - get
  - list
  - create
  - patch
  - delete
- apiGroups:
  - templates.gatekeeper.sh
  resources:
  - constrainttemplates
  verbs:
  - list
`
	if string(js) != want {
		t.Errorf("the hook's rules:\n%s\nwant:\n%s", js, want)
	}
}
