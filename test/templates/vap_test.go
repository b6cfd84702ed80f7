package templates_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moat-dev/moat/test/pack"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	celescape "k8s.io/apiserver/pkg/cel"
	"sigs.k8s.io/yaml"
)

// Gatekeeper turns every template with a CEL engine into a
// ValidatingAdmissionPolicy by default, and the API server refuses a
// variable whose name is not a plain CEL identifier ("namespace" is a
// reserved word): the template then reports created: false. The end-to-end
// test found one; this finds the next without a cluster.
func TestCELVariablesAreValidatingAdmissionPolicyIdentifiers(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(pack.Root, "templates", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no templates: %v", err)
	}
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tmpl map[string]any
		if err := yaml.Unmarshal(raw, &tmpl); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		targets, _, _ := unstructured.NestedSlice(tmpl, "spec", "targets")
		for _, tg := range targets {
			code, _, _ := unstructured.NestedSlice(tg.(map[string]any), "code")
			for _, c := range code {
				if c.(map[string]any)["engine"] != "K8sNativeValidation" {
					continue
				}
				vars, _, _ := unstructured.NestedSlice(c.(map[string]any), "source", "variables")
				for _, v := range vars {
					name, _ := v.(map[string]any)["name"].(string)
					if escaped, ok := celescape.Escape(name); !ok || escaped != name {
						t.Errorf("%s: CEL variable %q is not a plain CEL identifier; Gatekeeper cannot make a ValidatingAdmissionPolicy of it", filepath.Base(f), name)
					}
					checked++
				}
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d CEL variables found: has the template layout changed?", checked)
	}
}
