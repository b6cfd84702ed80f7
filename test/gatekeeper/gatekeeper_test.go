// Package gatekeeper_test runs Gatekeeper's own external-data client code
// against a real Moat provider: the frameworks' DefaultSendRequestToProvider
// with a client certificate, and a Rego ConstraintTemplate evaluated by the
// constraint framework's rego driver with external data and client auth on,
// exactly as the Gatekeeper webhook wires it.
package gatekeeper_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/open-policy-agent/frameworks/constraint/pkg/apis/externaldata/unversioned"
	"github.com/open-policy-agent/frameworks/constraint/pkg/client"
	"github.com/open-policy-agent/frameworks/constraint/pkg/client/drivers/rego"
	"github.com/open-policy-agent/frameworks/constraint/pkg/core/templates"
	"github.com/open-policy-agent/frameworks/constraint/pkg/externaldata"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/target"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/provider/testenv/answertest"
)

func provider(t *testing.T, env *testenv.Env, path string) *unversioned.Provider {
	t.Helper()
	ca, err := os.ReadFile(env.Path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return &unversioned.Provider{
		ObjectMeta: metav1.ObjectMeta{Name: "moat"},
		Spec: unversioned.ProviderSpec{
			URL:      env.URL + path,
			Timeout:  3,
			CABundle: base64.StdEncoding.EncodeToString(ca),
		},
	}
}

// externalDataClient is a constraint-framework client as the Gatekeeper
// webhook wires it: the rego driver with external data and client auth on,
// asking env's provider (Provider "moat") with the dev client certificate.
func externalDataClient(t *testing.T, env *testenv.Env) *client.Client {
	t.Helper()
	pc := externaldata.NewCache()
	if err := pc.Upsert(provider(t, env, "/validate")); err != nil {
		t.Fatal(err)
	}
	cw, err := certwatcher.New(env.Path("client.crt"), env.Path("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	driver, err := rego.New(rego.AddExternalDataProviderCache(pc), rego.EnableExternalDataClientAuth(), rego.AddExternalDataClientCertWatcher(cw))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewClient(client.Targets(&target.K8sValidationTarget{}), client.Driver(driver), client.EnforcementPoints("validation.gatekeeper.sh"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGatekeeperClientGetsDigests(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	ref, digest := env.Push(t, "gk/app:v1")
	cert, err := tls.LoadX509KeyPair(env.Path("client.crt"), env.Path("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{ref, "not a reference"}
	resp, code, err := externaldata.DefaultSendRequestToProvider(context.Background(), provider(t, env, "/validate"), keys, &cert)
	if err != nil || code != 200 {
		t.Fatalf("HTTP %d: %v", code, err)
	}
	items := resp.Response.Items
	if len(items) != 2 || items[0].Key != ref || items[1].Key != keys[1] {
		t.Fatalf("items %+v", items)
	}
	// What Gatekeeper's own client decoded is a moat.v2 value, schema and all.
	v := answertest.Check(t, answertest.Encode(t, items[0].Value))
	if v.Digest != digest || items[0].Error != "" {
		t.Errorf("value %#v error %q, want digest %s", items[0].Value, items[0].Error, digest)
	}
	if items[1].Error == "" || items[1].Value != nil {
		t.Errorf("bad key answered %+v, want an error", items[1])
	}

	mresp, _, err := externaldata.DefaultSendRequestToProvider(context.Background(), provider(t, env, "/mutate"), []string{ref}, &cert)
	if err != nil {
		t.Fatal(err)
	}
	if !mresp.Response.Idempotent || mresp.Response.Items[0].Value != ref+"@"+digest {
		t.Errorf("mutate: %+v", mresp.Response)
	}

	// Gatekeeper with no client certificate configured is refused.
	if _, _, err := externaldata.DefaultSendRequestToProvider(context.Background(), provider(t, env, "/validate"), keys, nil); err == nil {
		t.Error("a request without a client certificate was answered")
	}
}

// probeRego reports, for every container image, the digest Moat answers
// or the error, and any system error. It follows DESIGN.md's rules for
// external data: string keys only, system_error checked, errors and
// responses possibly null.
const probeRego = `
package moatdigestprobe

images := [img | img := input.review.object.spec[_][_].image; is_string(img)]

response := external_data({"provider": "moat", "keys": images})

violation[{"msg": msg}] {
	response.system_error != ""
	msg := sprintf("system error: %s", [response.system_error])
}

violation[{"msg": msg}] {
	item := object.get(response, "responses", [])[_]
	msg := sprintf("digest %s = %s", [item[0], item[1].digest])
}

violation[{"msg": msg}] {
	item := object.get(response, "errors", [])[_]
	msg := sprintf("error %s: %s", [item[0], item[1]])
}
`

func TestRegoTemplateSeesDigestsThroughTheConstraintFramework(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	ref, digest := env.Push(t, "gk/web:1.0")
	initRef, initDigest := env.Push(t, "gk/init:1.0")

	c := externalDataClient(t, env)
	ctx := context.Background()
	tmpl := &templates.ConstraintTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "moatdigestprobe"},
		Spec: templates.ConstraintTemplateSpec{
			CRD: templates.CRD{Spec: templates.CRDSpec{Names: templates.Names{Kind: "MoatDigestProbe"}}},
			Targets: []templates.Target{{Target: target.Name, Code: []templates.Code{{
				Engine: "Rego",
				Source: &templates.Anything{Value: map[string]any{"rego": probeRego}},
			}}}},
		},
	}
	if _, err := c.AddTemplate(ctx, tmpl); err != nil {
		t.Fatal(err)
	}
	constraint := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "constraints.gatekeeper.sh/v1beta1",
		"kind":       "MoatDigestProbe",
		"metadata":   map[string]any{"name": "probe"},
		"spec":       map[string]any{},
	}}
	if _, err := c.AddConstraint(ctx, constraint); err != nil {
		t.Fatal(err)
	}

	pod := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   map[string]any{"name": "web", "namespace": "prod"},
		"spec": map[string]any{
			"initContainers": []any{map[string]any{"name": "init", "image": initRef}},
			"containers": []any{
				map[string]any{"name": "web", "image": ref},
				map[string]any{"name": "gone", "image": env.RegistryHost + "/gk/web:missing"},
			},
		},
	}}
	resp, err := c.Review(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, r := range resp.Results() {
		msgs = append(msgs, r.Msg)
	}
	sort.Strings(msgs)
	want := []string{
		fmt.Sprintf("digest %s = %s", initRef, initDigest),
		fmt.Sprintf("digest %s = %s", ref, digest),
		fmt.Sprintf("error %s/gk/web:missing: %s/gk/web:missing: not found in registry %s (HTTP 404): the tag or repository does not exist", env.RegistryHost, env.RegistryHost, env.RegistryHost),
	}
	sort.Strings(want)
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("Rego saw:\n  %s\nwant:\n  %s", strings.Join(msgs, "\n  "), strings.Join(want, "\n  "))
	}
}
