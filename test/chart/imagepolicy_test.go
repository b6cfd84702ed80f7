package chart_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// The imagePolicy values of the chart README's example become these
// MoatImageScan constraints (testdata/imagepolicy.golden.yaml; run with
// -update to rewrite it after a deliberate change).
func TestImagePolicyValuesBecomeOneConstraintPerNamespace(t *testing.T) {
	objs := render(t, "-f=test/chart/testdata/imagepolicy-values.yaml")
	type constraint struct {
		Name string         `json:"name"`
		Spec map[string]any `json:"spec"`
	}
	var got []constraint
	for _, o := range objs {
		if o.GetKind() == "MoatImageScan" {
			spec, _ := o.Object["spec"].(map[string]any)
			got = append(got, constraint{o.GetName(), spec})
		}
	}
	out, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "imagepolicy.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(want) {
		t.Errorf("rendered constraints differ from %s:\n%s", golden, out)
	}
	if n := len(render(t, "scanner.mode=service")); n == 0 || count(render(t), "MoatImageScan") != 0 {
		t.Error("imagePolicy renders constraints while disabled")
	}
}
