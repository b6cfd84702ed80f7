package templates_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"text/tabwriter"
	"time"

	"github.com/moat-dev/moat/test/pack"
	"github.com/open-policy-agent/frameworks/constraint/pkg/core/templates"
	"github.com/open-policy-agent/gatekeeper/v3/apis"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator/reader"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// counterparts are gatekeeper-library's templates for the rules of the
// Defender set, with parameters that judge the sample pods as Moat's
// Defender constraints do. BenchmarkTemplates measures them beside Moat's
// when MOAT_GATEKEEPER_LIBRARY names a checkout's library/ directory; none
// of their code is in this repository.
var counterparts = map[string]struct{ dir, kind, params string }{
	"MoatTrustedRegistries":      {"general/allowedrepos", "K8sAllowedRepos", `{"repos": ["contoso.azurecr.io/"]}`},
	"MoatHostPaths":              {"pod-security-policy/host-filesystem", "K8sPSPHostFilesystem", `{"allowedHostPaths": []}`},
	"MoatHostNetworkPorts":       {"pod-security-policy/host-network-ports", "K8sPSPHostNetworkingPorts", `{"hostNetwork": false, "min": 0, "max": 0}`},
	"MoatAppArmor":               {"pod-security-policy/apparmor", "K8sPSPAppArmor", `{"allowedProfiles": ["runtime/default"]}`},
	"MoatHostNamespaces":         {"pod-security-policy/host-namespaces", "K8sPSPHostNamespace", `{}`},
	"MoatPrivileged":             {"pod-security-policy/privileged-containers", "K8sPSPPrivilegedContainer", `{}`},
	"MoatPrivilegeEscalation":    {"pod-security-policy/allow-privilege-escalation", "K8sPSPAllowPrivilegeEscalationContainer", `{}`},
	"MoatReadOnlyRootFilesystem": {"pod-security-policy/read-only-root-filesystem", "K8sPSPReadOnlyRootFilesystem", `{}`},
	"MoatCapabilities":           {"pod-security-policy/capabilities", "K8sPSPCapabilities", `{"allowedCapabilities": [], "requiredDropCapabilities": []}`},
}

// floorTemplate judges nothing: what the framework costs per constraint
// before any rule runs.
const floorTemplate = `
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: moatfloor}
spec:
  crd: {spec: {names: {kind: MoatFloor}}}
  targets:
  - target: admission.k8s.gatekeeper.sh
    code:
    - engine: K8sNativeValidation
      source:
        validations: [{expression: "true", message: "never"}]
    rego: |
      package moatfloor
      violation[{"msg": "never"}] { false }
`

// BenchmarkTemplates reviews each sample pod against one constraint at a
// time, each of the Defender set with its template alone, as Gatekeeper
// runs it (CEL where the template has it) and with Rego only, on one
// goroutine. It prints µs per review beside the framework's floor and, when
// named, beside the same rule's template from two other sources:
// MOAT_TEMPLATES_BASELINE, a directory of Moat templates of another version
// (a before/after comparison), and MOAT_GATEKEEPER_LIBRARY,
// gatekeeper-library's checkout. The templates compared are reviewed in
// turns of 100 within one sub-benchmark, so a machine that speeds up or
// slows down during the run moves them alike.
func BenchmarkTemplates(b *testing.B) {
	library := os.Getenv("MOAT_GATEKEEPER_LIBRARY")
	baseline := os.Getenv("MOAT_TEMPLATES_BASELINE")
	type row struct{ rule, pod, engine, who string }
	got := map[row]float64{}
	var rules []string
	type candidate struct {
		who        string
		tmpl       *templates.ConstraintTemplate
		constraint *unstructured.Unstructured
	}
	measure := func(rule, pod, engine string, cands []candidate) {
		b.Run(strings.Join([]string{rule, pod, engine}, "/"), func(b *testing.B) {
			review := samplePod(b, pod)
			clients := make([]gator.Client, len(cands))
			for i, cand := range cands {
				c := pack.NewClient(b, engine == "CEL")
				if _, err := c.AddTemplate(context.Background(), cand.tmpl); err != nil {
					b.Fatal(err)
				}
				pack.AddConstraint(b, c, cand.constraint)
				if _, err := c.Review(context.Background(), review); err != nil {
					b.Fatalf("%s: review: %v", cand.who, err)
				}
				clients[i] = c
			}
			const turn = 100
			spent := make([]time.Duration, len(cands))
			b.ResetTimer()
			for done := 0; done < b.N; done += turn {
				for i, c := range clients {
					start := time.Now()
					for range min(turn, b.N-done) {
						if _, err := c.Review(context.Background(), review); err != nil {
							b.Fatalf("%s: review: %v", cands[i].who, err)
						}
					}
					spent[i] += time.Since(start)
				}
			}
			for i, cand := range cands {
				us := float64(spent[i].Microseconds()) / float64(b.N)
				b.ReportMetric(us, cand.who+"-µs/review")
				got[row{rule, pod, engine, cand.who}] = us
			}
		})
	}
	floorTmpl, err := reader.ReadTemplate(scheme(b), fsOf([]byte(floorTemplate)), "t.yaml")
	if err != nil {
		b.Fatal(err)
	}
	floor := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "MoatFloor", "metadata": map[string]any{"name": "floor"}}}
	for _, engine := range []string{"CEL", "Rego"} {
		for _, pod := range []string{"unhealthy", "healthy"} {
			measure("(framework floor)", pod, engine, []candidate{{"moat", floorTmpl, floor}})
		}
	}
	files, _ := filepath.Glob(filepath.Join(pack.Root, "constraints", "defender", "*.yaml"))
	for _, f := range files {
		u := pack.ReadConstraint(b, f)
		_ = unstructured.SetNestedField(u.Object, "deny", "spec", "enforcementAction")
		kind := u.GetKind()
		rules = append(rules, kind)
		file := strings.ToLower(kind) + ".yaml"
		cands := []candidate{{"moat", pack.ReadTemplate(b, filepath.Join(pack.Root, "templates", file)), u}}
		if baseline != "" {
			cands = append(cands, candidate{"baseline", pack.ReadTemplate(b, filepath.Join(baseline, file)), u})
		}
		if cp, ok := counterparts[kind]; ok && library != "" {
			var params map[string]any
			if err := yaml.Unmarshal([]byte(cp.params), &params); err != nil {
				b.Fatal(err)
			}
			cands = append(cands, candidate{"library", pack.ReadTemplate(b, filepath.Join(library, cp.dir, "template.yaml")), &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": cp.kind,
				"metadata": map[string]any{"name": "library"},
				"spec":     map[string]any{"enforcementAction": "deny", "parameters": params},
			}}})
		}
		for _, engine := range []string{"CEL", "Rego"} {
			for _, pod := range []string{"unhealthy", "healthy"} {
				measure(kind, pod, engine, cands)
			}
		}
	}
	sort.Strings(rules)
	var out strings.Builder
	tw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "µs per review, one constraint\tunhealthy CEL\tunhealthy Rego\thealthy CEL\thealthy Rego\t")
	line := func(label, rule, who string) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, pod := range []string{"unhealthy", "healthy"} {
			for _, engine := range []string{"CEL", "Rego"} {
				v := got[row{rule, pod, engine, who}]
				if who != "moat" {
					fmt.Fprintf(tw, "%.0f (moat %.2f×)\t", v, got[row{rule, pod, engine, "moat"}]/v)
				} else {
					fmt.Fprintf(tw, "%.0f\t", v)
				}
			}
		}
		fmt.Fprintln(tw)
	}
	line("(framework floor)", "(framework floor)", "moat")
	for _, r := range rules {
		line(r, r, "moat")
		if baseline != "" {
			line("  baseline", r, "baseline")
		}
		if _, ok := counterparts[r]; ok && library != "" {
			line("  gatekeeper-library", r, "library")
		}
	}
	tw.Flush()
	fmt.Print(out.String()) // after the sub-benchmarks: a table, not log lines
}

func scheme(b *testing.B) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := apis.AddToScheme(s); err != nil {
		b.Fatal(err)
	}
	return s
}

func fsOf(file []byte) fstest.MapFS { return fstest.MapFS{"t.yaml": {Data: file}} }

// samplePod is Defender's unhealthy or healthy sample pod.
func samplePod(b *testing.B, name string) *unstructured.Unstructured {
	src := map[string]string{"unhealthy": unhealthyPod, "healthy": healthyPod}[name]
	var pod unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(src), &pod.Object); err != nil {
		b.Fatal(err)
	}
	return &pod
}

// BenchmarkFrameworkFloor is the figure docs/performance.md's decision on a
// combined template rests on: 17 constraints that judge nothing, as 17
// templates of one constraint each (as the Defender set is built) and as one
// template with 17 constraints (what a combined template keeping one
// constraint per recommendation would be), CEL and Rego.
func BenchmarkFrameworkFloor(b *testing.B) {
	const n = 17
	for _, engine := range []string{"CEL", "Rego"} {
		for _, oneKind := range []bool{false, true} {
			shape := "17_templates_x_1_constraint"
			if oneKind {
				shape = "1_template_x_17_constraints"
			}
			b.Run(engine+"/"+shape, func(b *testing.B) {
				c := pack.NewClient(b, engine == "CEL")
				for i := range n {
					kind := "MoatFloor"
					if !oneKind {
						kind = fmt.Sprintf("MoatFloor%d", i)
					}
					if i == 0 || kind != "MoatFloor" {
						src := strings.NewReplacer("moatfloor", strings.ToLower(kind), "MoatFloor", kind).Replace(floorTemplate)
						tmpl, err := reader.ReadTemplate(scheme(b), fsOf([]byte(src)), "t.yaml")
						if err != nil {
							b.Fatal(err)
						}
						if _, err := c.AddTemplate(context.Background(), tmpl); err != nil {
							b.Fatal(err)
						}
					}
					pack.AddConstraint(b, c, &unstructured.Unstructured{Object: map[string]any{
						"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": kind,
						"metadata": map[string]any{"name": fmt.Sprintf("floor-%d", i)},
						"spec":     map[string]any{"enforcementAction": "deny"},
					}})
				}
				pod := samplePod(b, "unhealthy")
				b.ResetTimer()
				for range b.N {
					if _, err := c.Review(context.Background(), pod); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/review")
			})
		}
	}
}
