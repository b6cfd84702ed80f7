package gatekeeper_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/open-policy-agent/frameworks/constraint/pkg/externaldata"
	mutationsunversioned "github.com/open-policy-agent/gatekeeper/v3/apis/mutations/unversioned"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/mutation"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/mutation/mutators/assign"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/mutation/types"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/yaml"

	"github.com/moat-dev/moat/provider/testenv"
)

// The shipped Assign mutators, run by Gatekeeper's own mutation system with
// its external-data client and client certificate, against the provider.
func TestShippedMutatorsPinTheRegistrysDigest(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	app, appDigest := env.Push(t, "mut/app:v1")
	initRef, initDigest := env.Push(t, "mut/init:v1")
	pinned := env.RegistryHost + "/mut/pinned@sha256:" + strings.Repeat("cd", 32)

	pc := externaldata.NewCache()
	p := provider(t, env, "/mutate")
	p.Name = "moat-mutate"
	if err := pc.Upsert(p); err != nil {
		t.Fatal(err)
	}
	cw, err := certwatcher.New(env.Path("client.crt"), env.Path("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	sys := mutation.NewSystem(mutation.SystemOpts{
		ProviderCache:                     pc,
		SendRequestToExternalDataProvider: externaldata.DefaultSendRequestToProvider,
		ClientCertWatcher:                 cw,
	})
	raw, err := os.ReadFile("../../constraints/mutation/pin-digests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var u map[string]any
		if err := yaml.Unmarshal([]byte(doc), &u); err != nil || u == nil {
			continue
		}
		var a mutationsunversioned.Assign
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, &a); err != nil {
			t.Fatal(err)
		}
		m, err := assign.MutatorForAssign(&a)
		if err != nil {
			t.Fatalf("%s: %v", a.Name, err)
		}
		if err := sys.Upsert(m); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d Assign mutators, want 3 (containers, initContainers, ephemeralContainers)", n)
	}

	pod := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "web", "namespace": "apps"},
		"spec": map[string]any{
			"initContainers":      []any{map[string]any{"name": "init", "image": initRef}},
			"containers":          []any{map[string]any{"name": "app", "image": app}, map[string]any{"name": "side", "image": pinned}},
			"ephemeralContainers": []any{map[string]any{"name": "debug", "image": app}},
		},
	}}
	mutate := func() {
		t.Helper()
		if _, err := sys.Mutate(context.Background(), &types.Mutable{
			Object:    pod,
			Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}},
			Username:  "alice",
			Source:    types.SourceTypeOriginal,
			Operation: admissionv1.Create,
		}); err != nil {
			t.Fatal(err)
		}
	}
	mutate()
	image := func(list string, i int) string {
		cs, _, _ := unstructured.NestedSlice(pod.Object, "spec", list)
		return cs[i].(map[string]any)["image"].(string)
	}
	want := map[string]string{
		"containers/0":          app + "@" + appDigest,
		"containers/1":          pinned,
		"initContainers/0":      initRef + "@" + initDigest,
		"ephemeralContainers/0": app + "@" + appDigest,
	}
	check := func() {
		t.Helper()
		for k, w := range want {
			list, idx, _ := strings.Cut(k, "/")
			if got := image(list, int(idx[0]-'0')); got != w {
				t.Errorf("%s image %q, want %q", k, got, w)
			}
		}
	}
	check()

	// The tag moves; the pod keeps running what was checked, even if it is
	// mutated again (an UPDATE): pinned references come back unchanged.
	env.Push(t, "mut/app:v1")
	mutate()
	check()
}
