package templates_test

import (
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// nullable are field names that raw manifests (Helm output) write as an
// explicit null.
var nullable = []string{
	"securityContext", "procMount", "capabilities", "add", "drop", "sysctls", "seLinuxOptions", "seccompProfile",
	"appArmorProfile", "windowsOptions", "privileged", "allowPrivilegeEscalation", "runAsUser", "runAsGroup",
	"runAsNonRoot", "readOnlyRootFilesystem", "hostPath", "volumes", "volumeMounts", "ports", "hostPort", "hostNetwork",
	"hostPID", "hostIPC", "hostUsers", "os", "livenessProbe", "readinessProbe", "lifecycle", "httpGet", "host",
	"fsGroup", "supplementalGroups", "type", "level", "user", "role", "hostProcess", "automountServiceAccountToken",
	"initContainers", "ephemeralContainers", "limits",
}

// withNulls returns pod with explicit nulls put into its spec, and the pod
// the API server would decode from it (each null field absent).
func withNulls(r *rand.Rand, pod map[string]any) (nulled, decoded map[string]any) {
	nulled, decoded = runtime.DeepCopyJSON(pod), runtime.DeepCopyJSON(pod)
	var visit func(n, d any)
	visit = func(n, d any) {
		switch nv := n.(type) {
		case map[string]any:
			dv := d.(map[string]any)
			keys := make([]string, 0, len(nv))
			for k := range nv {
				keys = append(keys, k)
			}
			sort.Strings(keys) // the same nulls on every run
			for _, k := range keys {
				v := nv[k]
				if v == nil {
					continue
				}
				if k != "name" && k != "image" && k != "type" && r.IntN(12) == 0 { // required fields stay
					nv[k] = nil
					delete(dv, k)
					continue
				}
				visit(v, dv[k])
			}
			if r.IntN(5) == 0 {
				if k := pick(r, nullable...); nv[k] == nil {
					if _, ok := nv[k]; !ok {
						nv[k] = nil
					}
				}
			}
		case []any:
			dv := d.([]any)
			for i := range nv {
				visit(nv[i], dv[i])
			}
		}
	}
	visit(nulled["spec"], decoded["spec"])
	return nulled, decoded
}

// TestExplicitNullsAreAbsent: a pod with explicit nulls gets, from both
// engines, the verdict of the pod the API server would decode from it.
func TestExplicitNullsAreAbsent(t *testing.T) {
	cel, rego, _ := clients(t)
	n := 300
	if testing.Short() {
		n = 100
	}
	rng := rand.New(rand.NewPCG(20261201, 9))
	differs := 0
	for i := range n {
		pod := randomPod(rng, i)
		if i%2 == 0 {
			pod = nearlyCompliantPod(rng, i)
		}
		if pod["kind"] != "Pod" {
			continue
		}
		nulled, decoded := withNulls(rng, pod)
		want := verdicts(t, cel, &unstructured.Unstructured{Object: decoded})
		gotCEL := verdicts(t, cel, &unstructured.Unstructured{Object: nulled})
		gotRego := verdicts(t, rego, &unstructured.Unstructured{Object: nulled})
		for name, got := range map[string][]string{"CEL": gotCEL, "Rego": gotRego} {
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				js, _ := yaml.Marshal(nulled)
				t.Fatalf("pod %d with nulls: %s says, beyond the decoded pod's verdicts:\n  %s\nand not:\n  %s\n%s", i, name,
					strings.Join(minus(got, want), "\n  "), strings.Join(minus(want, got), "\n  "), js)
			}
		}
		if strings.Join(verdicts(t, cel, &unstructured.Unstructured{Object: pod}), "\n") != strings.Join(want, "\n") {
			differs++
		}
	}
	t.Logf("%d pods with explicit nulls: CEL and Rego give the decoded pod's verdicts; %d of them differ from the pod before the nulls", n, differs)
}

// minus is the lines of a that b lacks.
func minus(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}
