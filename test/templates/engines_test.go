// Package templates_test checks the policy pack as a whole: the two
// engines of every template must agree, on every generated pod, about
// whether and why it violates.
package templates_test

import (
	"context"
	"fmt"
	"github.com/moat-dev/moat/test/pack"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// loadPack adds every template and every suite constraint to c and returns
// the constraints' names. Each is renamed after its suite and test, so none
// collide.
func loadPack(t testing.TB, c gator.Client) []string {
	t.Helper()
	pack.AddTemplates(t, c)
	suites, err := filepath.Glob(filepath.Join(pack.Root, "gator-suites", "*", "suite.yaml"))
	if err != nil || len(suites) == 0 {
		t.Fatalf("no suites: %v", err)
	}
	var names []string
	for _, sf := range suites {
		if _, err := os.Stat(filepath.Join(filepath.Dir(sf), "external-data.yaml")); err == nil {
			continue // its templates call external_data: moat verify runs it
		}
		raw, err := os.ReadFile(sf)
		if err != nil {
			t.Fatal(err)
		}
		var suite struct {
			Metadata struct{ Name string }
			Tests    []struct {
				Name, Template, Constraint string
				Invalid                    bool // a constraint the template's schema refuses
			}
		}
		if err := yaml.Unmarshal(raw, &suite); err != nil {
			t.Fatalf("%s: %v", sf, err)
		}
		for _, test := range suite.Tests {
			if test.Invalid {
				continue
			}
			u := pack.ReadConstraint(t, filepath.Join(filepath.Dir(sf), test.Constraint))
			withWorkloads(t, u)
			u.SetName(fmt.Sprintf("%s-%s", suite.Metadata.Name, test.Name))
			pack.AddConstraint(t, c, u)
			names = append(names, u.GetName())
		}
	}
	return names
}

// withWorkloads adds the workload kinds to a constraint that matches pods,
// as the shipped constraints do, so workload updates are judged too.
func withWorkloads(t testing.TB, u *unstructured.Unstructured) {
	kinds, _, _ := unstructured.NestedSlice(u.Object, "spec", "match", "kinds")
	for _, k := range kinds {
		if names, _ := k.(map[string]any)["kinds"].([]any); len(names) == 1 && names[0] == "Pod" {
			kinds = append(kinds,
				map[string]any{"apiGroups": []any{"apps"}, "kinds": []any{"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}},
				map[string]any{"apiGroups": []any{"batch"}, "kinds": []any{"Job", "CronJob"}})
			if err := unstructured.SetNestedSlice(u.Object, kinds, "spec", "match", "kinds"); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// verdicts is the sorted "constraint: message" list of a review.
func verdicts(t testing.TB, c gator.Client, obj *unstructured.Unstructured) []string {
	t.Helper()
	resp, err := c.Review(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range resp.Results() {
		out = append(out, r.Constraint.GetName()+": "+r.Msg)
	}
	sort.Strings(out)
	return out
}

func clients(t testing.TB) (cel, rego gator.Client, constraints []string) {
	t.Helper()
	cel, rego = pack.NewClient(t, true), pack.NewClient(t, false)
	constraints = loadPack(t, cel)
	loadPack(t, rego)
	return cel, rego, constraints
}

// resized is an update of the pods/resize subresource: new resources for a
// container, which MoatContainerLimits judges and no other rule does.
func resized(r *rand.Rand, old map[string]any) podUpdate {
	p := runtime.DeepCopyJSON(old)
	cs, _ := p["spec"].(map[string]any)["containers"].([]any)
	if len(cs) > 0 {
		c := cs[r.IntN(len(cs))].(map[string]any)
		c["resources"] = pick(r,
			map[string]any{"limits": map[string]any{"cpu": "500m", "memory": "256Mi"}},
			map[string]any{"limits": map[string]any{"cpu": "64", "memory": "1Ti"}},
			map[string]any{"requests": map[string]any{"cpu": "100m"}})
	}
	return podUpdate{kind: "resize", subresource: "resize", old: old, new: p}
}

// workloadUpdates are UPDATEs of a Deployment and a CronJob whose pod
// template is pod: scaled (template unchanged), and given another image.
func workloadUpdates(r *rand.Rand, pod map[string]any) []podUpdate {
	template := map[string]any{"metadata": runtime.DeepCopyJSONValue(pod["metadata"]), "spec": runtime.DeepCopyJSONValue(pod["spec"])}
	meta := pod["metadata"].(map[string]any)
	deployment := func(replicas int64, tmpl map[string]any) map[string]any {
		return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "web", "namespace": meta["namespace"]},
			"spec": map[string]any{"replicas": replicas, "template": runtime.DeepCopyJSONValue(tmpl)}}
	}
	cronJob := func(tmpl map[string]any) map[string]any {
		return map[string]any{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": map[string]any{"name": "nightly", "namespace": meta["namespace"]},
			"spec": map[string]any{"schedule": "0 3 * * *", "jobTemplate": map[string]any{"spec": map[string]any{"template": runtime.DeepCopyJSONValue(tmpl)}}}}
	}
	changed := runtime.DeepCopyJSON(template)
	if cs, _ := changed["spec"].(map[string]any)["containers"].([]any); len(cs) > 0 {
		c := cs[r.IntN(len(cs))].(map[string]any)
		c["image"] = fmt.Sprintf("%v-next", c["image"])
	} else {
		changed["metadata"].(map[string]any)["annotations"] = map[string]any{"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"}
	}
	return []podUpdate{
		{kind: "deployment-scaled", old: deployment(1, template), new: deployment(3, template)},
		{kind: "deployment-template-changed", old: deployment(1, template), new: deployment(1, changed)},
		{kind: "cronjob-template-changed", old: cronJob(template), new: cronJob(changed)},
	}
}

func TestEnginesAgreeOnGeneratedPods(t *testing.T) {
	cel, rego, constraints := clients(t)
	n := 2000
	if testing.Short() {
		n = 200
	}
	rng := rand.New(rand.NewPCG(20261122, 3))
	violated := map[string]int{}
	updates := map[string]int{}
	for i := range n {
		pod := &unstructured.Unstructured{Object: randomPod(rng, i)}
		a, b := verdicts(t, cel, pod), verdicts(t, rego, pod)
		if strings.Join(a, "\n") != strings.Join(b, "\n") {
			js, _ := yaml.Marshal(pod.Object)
			t.Fatalf("pod %d: the engines disagree\nCEL:\n  %s\nRego:\n  %s\npod:\n%s", i, strings.Join(a, "\n  "), strings.Join(b, "\n  "), js)
		}
		// Every twentieth pod is updated too, as podUpdates does, and resized.
		if i%20 == 0 && pod.GetKind() == "Pod" {
			ups := append(podUpdates(rng, pod.Object), resized(rng, pod.Object))
			for _, u := range append(ups, workloadUpdates(rng, pod.Object)...) {
				ua, ub := reviewUpdate(t, cel, u), reviewUpdate(t, rego, u)
				sort.Strings(ua)
				sort.Strings(ub)
				if strings.Join(ua, "\n") != strings.Join(ub, "\n") {
					js, _ := yaml.Marshal(map[string]any{"old": u.old, "new": u.new})
					t.Fatalf("pod %d, update %s: the engines disagree\nCEL:\n  %s\nRego:\n  %s\n%s", i, u.kind, strings.Join(ua, "\n  "), strings.Join(ub, "\n  "), js)
				}
				updates[u.kind+map[bool]string{true: " (allowed)", false: " (denied)"}[len(ua) == 0]]++
			}
		}
		seen := map[string]bool{}
		for _, v := range a {
			seen[strings.SplitN(v, ":", 2)[0]] = true
		}
		for c := range seen {
			violated[c]++
		}
	}
	// A workload whose pod template did not change is never judged; one
	// whose template did is judged as a new pod.
	if updates["deployment-scaled (denied)"] > 0 || updates["deployment-template-changed (denied)"] == 0 || updates["cronjob-template-changed (denied)"] == 0 {
		t.Errorf("workload updates: %v; want no scaled Deployment denied and some changed templates denied", updates)
	}
	// Agreement proves something only where the generator makes pods on
	// both sides of every constraint.
	for _, c := range constraints {
		// A constraint at a version before its rule existed never violates.
		if violated[c] == 0 && strings.HasSuffix(c, "-has-no-such-rule") {
			continue
		}
		if violated[c] == 0 || violated[c] == n {
			t.Errorf("constraint %s is violated by %d of %d generated pods; extend the generator so both sides occur", c, violated[c], n)
		}
	}
	t.Logf("%d pods: CEL and Rego agree on every verdict and message; violations per constraint: %v; updates: %v", n, violated, updates)
}
