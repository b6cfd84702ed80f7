// Tests of the Helm chart that need Helm's own Go packages. They live in this
// module because Helm v3.22 needs k8s.io v0.37 and the main module is on v0.36.
package helm_test

import (
	"context"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"
)

// cluster is a fake API server holding what earlier renders installed.
type cluster struct {
	client *dynamicfake.FakeDynamicClient
}

var secrets = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

func (c cluster) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	return c.client.Resource(secrets), true, nil
}

func renderTLS(t *testing.T, c cluster) map[string]any {
	t.Helper()
	chrt, err := loader.Load("../../charts/moat")
	if err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion.Version = "v1.34.0"
	vals, err := chartutil.ToRenderValues(chrt, map[string]any{}, chartutil.ReleaseOptions{Name: "moat", Namespace: "gatekeeper-system", IsUpgrade: true}, caps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.RenderWithClientProvider(chrt, vals, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(out["moat/templates/tls-and-providers.yaml"], "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err == nil && m["kind"] == "Secret" {
			return m
		}
	}
	t.Fatal("no Secret rendered")
	return nil
}

// helm upgrade keeps the certificates: the second render finds the Secret
// the first one installed and reuses it, so Gatekeeper's caBundle and the
// provider's certificate stay the same.
func TestUpgradeKeepsCertificates(t *testing.T) {
	empty := cluster{dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{secrets: "SecretList"})}
	first := renderTLS(t, empty)
	again := renderTLS(t, empty)
	if first["data"].(map[string]any)["ca.crt"] == again["data"].(map[string]any)["ca.crt"] {
		t.Fatal("two fresh installs made the same CA; the test could not tell reuse from regeneration")
	}

	installed := &unstructured.Unstructured{Object: first}
	installed.SetNamespace("gatekeeper-system")
	withSecret := cluster{dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{secrets: "SecretList"}, installed)}
	if _, err := withSecret.client.Resource(secrets).Namespace("gatekeeper-system").Get(context.Background(), "moat-tls", metav1.GetOptions{}); err != nil {
		t.Fatalf("fake cluster lacks the installed secret: %v", err)
	}
	upgraded := renderTLS(t, withSecret)
	for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if upgraded["data"].(map[string]any)[k] != first["data"].(map[string]any)[k] {
			t.Errorf("helm upgrade changed %s", k)
		}
	}
}
