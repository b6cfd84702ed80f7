package templates_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	mutationtypes "github.com/open-policy-agent/gatekeeper/v3/pkg/mutation/types"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/target"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// podUpdate is an UPDATE of a pod as the API server sends it for admission.
type podUpdate struct {
	kind        string
	subresource string
	old, new    map[string]any
}

// podUpdates are the updates a running pod meets, each made from old: a
// label, a finalizer removed while terminating (both insignificant to Pod
// Security Admission), an image changed, a container added, a status
// update, and kubectl debug adding an ephemeral container, hardened,
// random or privileged.
func podUpdates(r *rand.Rand, old map[string]any) []podUpdate {
	with := func(change func(p map[string]any)) map[string]any {
		p := runtime.DeepCopyJSON(old)
		change(p)
		return p
	}
	containers := func(p map[string]any, list string) []any {
		cs, _ := p["spec"].(map[string]any)[list].([]any)
		return cs
	}
	debug := func(sc map[string]any) map[string]any {
		c := map[string]any{"name": fmt.Sprintf("debugger-%d", r.IntN(1000)), "image": "busybox:1.37"}
		if sc != nil {
			c["securityContext"] = sc
		}
		return c
	}
	hardened := map[string]any{"runAsNonRoot": true, "allowPrivilegeEscalation": false, "capabilities": map[string]any{"drop": []any{"ALL"}}, "seccompProfile": map[string]any{"type": "RuntimeDefault"}}
	addEphemeral := func(c map[string]any) func(p map[string]any) {
		return func(p map[string]any) {
			spec := p["spec"].(map[string]any)
			spec["ephemeralContainers"] = append(containers(p, "ephemeralContainers"), c)
		}
	}
	terminating := with(func(p map[string]any) {
		m := p["metadata"].(map[string]any)
		m["deletionTimestamp"] = "2026-12-01T10:00:00Z"
		m["finalizers"] = []any{"example.com/cleanup"}
	})
	finalized := runtime.DeepCopyJSON(terminating)
	delete(finalized["metadata"].(map[string]any), "finalizers")
	random := randomContainer(r, "debugger")
	delete(random, "resources")
	ups := []podUpdate{
		{kind: "metadata-only", old: old, new: with(func(p map[string]any) {
			p["metadata"].(map[string]any)["labels"] = map[string]any{"team": "payments"}
		})},
		{kind: "finalizer-removed-while-terminating", old: terminating, new: finalized},
		{kind: "status", subresource: "status", old: old, new: with(func(p map[string]any) {
			p["status"] = map[string]any{"phase": "Running"}
		})},
		{kind: "ephemeral-hardened", subresource: "ephemeralcontainers", old: old, new: with(addEphemeral(debug(hardened)))},
		{kind: "ephemeral-random", subresource: "ephemeralcontainers", old: old, new: with(addEphemeral(random))},
		{kind: "ephemeral-privileged", subresource: "ephemeralcontainers", old: old, new: with(addEphemeral(debug(map[string]any{"privileged": true})))},
		{kind: "container-added", old: old, new: with(func(p map[string]any) {
			c := randomContainer(r, "added")
			delete(c, "resources")
			p["spec"].(map[string]any)["containers"] = append(containers(p, "containers"), c)
		})},
	}
	if cs := containers(old, "containers"); len(cs) > 0 {
		ups = append(ups, podUpdate{kind: "image-changed", old: old, new: with(func(p map[string]any) {
			c := containers(p, "containers")[r.IntN(len(cs))].(map[string]any)
			c["image"] = fmt.Sprintf("%v-next", c["image"])
		})})
	}
	return ups
}

// reviewUpdate is Moat's verdicts on u, sent as Gatekeeper's webhook sends
// an admission request.
func reviewUpdate(t testing.TB, c gator.Client, u podUpdate) []string {
	t.Helper()
	raw := func(o map[string]any) runtime.RawExtension {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	meta := u.new["metadata"].(map[string]any)
	gvk := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	resource := metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
	switch u.new["kind"] {
	case "Deployment":
		gvk, resource = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	case "CronJob":
		gvk, resource = metav1.GroupVersionKind{Group: "batch", Version: "v1", Kind: "CronJob"}, metav1.GroupVersionResource{Group: "batch", Version: "v1", Resource: "cronjobs"}
	}
	req := &admissionv1.AdmissionRequest{
		UID:         "update",
		Kind:        gvk,
		Resource:    resource,
		SubResource: u.subresource,
		Name:        fmt.Sprint(meta["name"]),
		Namespace:   fmt.Sprint(meta["namespace"]),
		Operation:   admissionv1.Update,
		Object:      raw(u.new),
		OldObject:   raw(u.old),
	}
	resp, err := c.Review(context.Background(), target.AugmentedReview{AdmissionRequest: req, Source: mutationtypes.SourceTypeOriginal, IsAdmission: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range resp.Results() {
		out = append(out, r.Constraint.GetName()+": "+r.Msg)
	}
	return out
}

// TestPodSecurityStandardsMatchPodSecurityAdmissionOnUpdate sends the
// updates of podUpdates, made from hand-written and generated pods, to Pod
// Security Admission's admission code and to Moat's PSS sets, at both
// levels: the verdicts must be equal.
func TestPodSecurityStandardsMatchPodSecurityAdmissionOnUpdate(t *testing.T) {
	psa := newPSA(t)
	levels := pssLevels(t, "latest")
	pods := psaPods(t, rand.New(rand.NewPCG(20261201, 5)), 300)
	rng := rand.New(rand.NewPCG(20261201, 6))
	counts := map[string][2]int{}
	insignificant := map[string]bool{"metadata-only": true, "finalizer-removed-while-terminating": true, "status": true}
	allowedNonCompliant := map[string]int{}
	for i, old := range pods {
		for _, u := range podUpdates(rng, old) {
			for _, l := range levels {
				allowed, reasons := psa.admitsUpdate(t, l.level, u)
				got := reviewUpdate(t, l.client, u)
				if allowed != (len(got) == 0) {
					js, _ := yaml.Marshal(map[string]any{"old": u.old, "new": u.new})
					t.Fatalf("pod %d, update %s at %s: Pod Security Admission allows=%v (%s), Moat's constraints allow=%v (%s)\n%s",
						i, u.kind, l.level, allowed, strings.Join(reasons, "; "), len(got) == 0, strings.Join(got, "; "), js)
				}
				n := counts[u.kind]
				if allowed {
					if created, _ := psa.allowsAt(t, l.level, "latest", u.old); !created {
						allowedNonCompliant[u.kind]++
					}
					n[0]++
				} else {
					n[1]++
				}
				counts[u.kind] = n
			}
		}
	}
	// The generator must give each update both verdicts, except a privileged
	// debug container (always denied); and the insignificant updates must
	// have been allowed on pods that their level would refuse to create.
	for kind, n := range counts {
		switch {
		case kind == "ephemeral-privileged":
			if n[0] != 0 {
				t.Errorf("%s: Pod Security Admission allowed %d", kind, n[0])
			}
		case insignificant[kind]:
			if allowedNonCompliant[kind] == 0 {
				t.Errorf("%s: never allowed on a pod its level would refuse to create", kind)
			}
		case n[0] == 0 || n[1] == 0:
			t.Errorf("%s: %d allowed, %d denied; the generator must produce both", kind, n[0], n[1])
		}
	}
	t.Logf("%d pods, each updated %d ways at 2 levels: same verdict as Pod Security Admission's admission code; allowed/denied per update: %v; allowed although the pod breaks its level: %v",
		len(pods), len(counts), counts, allowedNonCompliant)
}
