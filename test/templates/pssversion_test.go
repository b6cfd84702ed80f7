package templates_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/moat-dev/moat/test/pack"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// podSecurityTemplates are the templates that take the parameter version.
func podSecurityTemplates(t *testing.T) []string {
	files, _ := filepath.Glob(filepath.Join(pack.Root, "templates", "*.yaml"))
	var out []string
	for _, f := range files {
		tmpl := pack.ReadTemplate(t, f)
		if _, ok := tmpl.Spec.CRD.Spec.Validation.OpenAPIV3Schema.Properties["version"]; ok {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatal("no template takes version")
	}
	return out
}

// The schema refuses a malformed version (gator-suites' invalid tests);
// should a constraint reach a template without that check, both engines
// still refuse it rather than fall back to some version's rules.
func TestMalformedVersionRefusedWithoutTheSchema(t *testing.T) {
	pod := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "p", "namespace": "apps"},
		"spec":     map[string]any{"containers": []any{map[string]any{"name": "web", "image": "nginx"}}},
	}}
	refused := regexp.MustCompile(`^parameter version must be "latest" or "v1.N"`)
	for _, f := range podSecurityTemplates(t) {
		for _, cel := range []bool{true, false} {
			c := pack.NewClient(t, cel)
			tmpl := pack.ReadTemplate(t, f)
			props := tmpl.Spec.CRD.Spec.Validation.OpenAPIV3Schema.Properties
			v := props["version"]
			v.Pattern = ""
			props["version"] = v
			if _, err := c.AddTemplate(context.Background(), tmpl); err != nil {
				t.Fatal(err)
			}
			kind := tmpl.Spec.CRD.Spec.Names.Kind
			for _, version := range []string{"1.30", "v1.3O", "v2.0", "v1.030", "v1.", "Latest", "v1.123456"} {
				u := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": kind,
					"metadata": map[string]any{"name": "v"},
					"spec": map[string]any{
						"match":      map[string]any{"kinds": []any{map[string]any{"apiGroups": []any{""}, "kinds": []any{"Pod"}}}},
						"parameters": map[string]any{"version": version},
					},
				}}
				pack.AddConstraint(t, c, u)
				got := verdicts(t, c, pod)
				found := false
				for _, g := range got {
					found = found || refused.MatchString(g[len("v: "):])
				}
				if !found {
					t.Errorf("%s (cel=%v) with version %q: want the refusal, got %q", kind, cel, version, got)
				}
			}
		}
	}
}

// Every constraint of the Pod Security Standards sets names its version,
// latest, so that one edit (or the chart's policies.podSecurity.version)
// pins the whole set.
func TestPodSecuritySetsNameTheirVersion(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(pack.Root, "constraints", "pss", "*", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no constraints")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Spec struct{ Parameters map[string]any }
		}
		if err := yaml.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		if c.Spec.Parameters["version"] != "latest" {
			t.Errorf("%s: spec.parameters.version is %v, want latest", f, c.Spec.Parameters["version"])
		}
	}
}

// The comparison runs Pod Security Admission at the release of the
// Kubernetes that Moat's own e2e cluster runs, so "latest" means the same
// in both.
func TestPodSecurityAdmissionInStepWithTheE2ECluster(t *testing.T) {
	minor := func(gomod, module string, major int) string {
		raw, err := os.ReadFile(filepath.Join(pack.Root, gomod))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + ` v` + strconv.Itoa(major) + `\.(\d+)\.\d+`).FindSubmatch(raw)
		if m == nil {
			t.Fatalf("%s does not require %s v%d.x", gomod, module, major)
		}
		return string(m[1])
	}
	psa := minor("tools/psa/go.mod", "k8s.io/pod-security-admission", 0)
	kube := minor("tools/kube/go.mod", "k8s.io/kubernetes", 1)
	if psa != kube {
		t.Errorf("tools/psa runs k8s.io/pod-security-admission 0.%s, the e2e cluster Kubernetes 1.%s: move them together", psa, kube)
	}
}
