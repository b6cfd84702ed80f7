// Tests of the Helm chart that need Helm's own Go packages. They live in this
// module to keep Helm's dependency tree (and the helm tool pin) out of the
// main module.
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

// renderSecret renders the chart with values into c and returns the Secret
// called name from the template file.
func renderSecret(t *testing.T, c cluster, values map[string]any, file, name string) map[string]any {
	t.Helper()
	chrt, err := loader.Load("../../charts/moat")
	if err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion.Version = "v1.34.0"
	vals, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{Name: "moat", Namespace: "gatekeeper-system", IsUpgrade: true}, caps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.RenderWithClientProvider(chrt, vals, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(out["moat/templates/"+file], "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err == nil && m["kind"] == "Secret" && m["metadata"].(map[string]any)["name"] == name {
			return m
		}
	}
	t.Fatalf("no Secret %s rendered by %s", name, file)
	return nil
}

// helm upgrade keeps the certificates: the second render finds the Secret
// the first one installed and reuses it, so Gatekeeper's caBundle and the
// provider's certificate stay the same. The same holds for the CA of the
// cert-manager mode and for the scanner service's certificates.
func TestUpgradeKeepsCertificates(t *testing.T) {
	cases := []struct {
		name, file, secret string
		values             map[string]any
		keys               []string
	}{
		{"default", "tls-and-providers.yaml", "moat-tls", map[string]any{}, []string{"ca.crt", "tls.crt", "tls.key"}},
		{"cert-manager", "tls-and-providers.yaml", "moat-ca",
			map[string]any{"certificates": map[string]any{"certManager": map[string]any{"enabled": true}}}, []string{"tls.crt", "tls.key"}},
		{"scanner", "scanner.yaml", "moat-scanner-tls",
			map[string]any{"scanner": map[string]any{"mode": "service"}}, []string{"ca.crt", "tls.crt", "tls.key", "client.crt", "client.key"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			empty := cluster{dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{secrets: "SecretList"})}
			first := renderSecret(t, empty, c.values, c.file, c.secret)
			again := renderSecret(t, empty, c.values, c.file, c.secret)
			if first["data"].(map[string]any)["tls.crt"] == again["data"].(map[string]any)["tls.crt"] {
				t.Fatal("two fresh installs made the same certificate; the test could not tell reuse from regeneration")
			}
			installed := &unstructured.Unstructured{Object: first}
			installed.SetNamespace("gatekeeper-system")
			withSecret := cluster{dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{secrets: "SecretList"}, installed)}
			if _, err := withSecret.client.Resource(secrets).Namespace("gatekeeper-system").Get(context.Background(), c.secret, metav1.GetOptions{}); err != nil {
				t.Fatalf("fake cluster lacks the installed secret: %v", err)
			}
			upgraded := renderSecret(t, withSecret, c.values, c.file, c.secret)
			for _, k := range c.keys {
				if upgraded["data"].(map[string]any)[k] != first["data"].(map[string]any)[k] {
					t.Errorf("helm upgrade changed %s", k)
				}
			}
		})
	}
}
