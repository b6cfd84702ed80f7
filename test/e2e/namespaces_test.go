package e2e_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/e2e/cluster"
)

// namespaceCredentials: a private image in tenant-a, whose pod names its
// pull Secret, goes through mutation (pinned with the cluster-wide
// credentials), scan and validation (a namespaced key, tenant-a's Secret);
// the same image in tenant-b, which holds no Secret, is denied with the
// registry's refusal, and no key of tenant-b ever uses tenant-a's Secret,
// not even one that names it.
func (e *e2e) namespaceCredentials(t *testing.T, dir string) {
	ctx := context.Background()
	const home = "moat-tenancy"
	for _, ns := range []string{home, "tenant-a", "tenant-b"} {
		e.createNamespace(t, ns)
	}
	auth := &basicAuth{byUser: map[string]int{}}
	host := testenv.StartRegistryWith(t, auth.wrap)
	image, _ := testenv.PushSampleTo(t, host, "private/app:v1", "clean")
	auth.set("team-a", "pa")
	teamA := func() int {
		auth.mu.Lock()
		defer auth.mu.Unlock()
		return auth.byUser["team-a"]
	}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "regcred"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host,
			base64.StdEncoding.EncodeToString([]byte("team-a:pa"))))}}
	_, err := e.client.CoreV1().Secrets("tenant-a").Create(ctx, secret, metav1.CreateOptions{})
	must(t, err)
	// Moat reads both tenants' credentials, and tenant-a's Secret is also a
	// cluster-wide one (for the mutator, which sends no namespace).
	if n := e.applyChartRBAC(t, home, "provider.namespaceCredentials={tenant-a,tenant-b}", "provider.pullSecrets={tenant-a/regcred}"); n != 7 {
		t.Fatalf("the chart rendered %d RBAC objects, want a ServiceAccount and three Roles with their bindings", n)
	}
	// The new Roles are in force before the replica starts.
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		for _, ns := range []string{"tenant-a", "tenant-b"} {
			if !e.canI(t, "system:serviceaccount:"+home+":moat", ns, "watch", "secrets", "") {
				return fmt.Errorf("the ServiceAccount may not watch the Secrets of %s yet", ns)
			}
		}
		return nil
	})
	must(t, err)
	kubeconfig := filepath.Join(dir, "moat-tenancy.kubeconfig")
	must(t, e.cl.ServiceAccountKubeconfig(ctx, home, "moat", kubeconfig))
	replica, url, _ := e.startReplicaWith(t, dir, "moat-serve-tenancy", "--kubeconfig", kubeconfig,
		"--namespace-credentials", "tenant-a,tenant-b", "--pull-secrets", "tenant-a/regcred", "--insecure-registries", host)
	defer replica.Stop()

	scan := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "MoatImageScan",
		"metadata": map[string]any{"name": "e2e-tenant-image-scan"},
		"spec": map[string]any{
			"enforcementAction": "deny",
			"match": map[string]any{
				"kinds":      []any{map[string]any{"apiGroups": []any{""}, "kinds": []any{"Pod"}}},
				"namespaces": []any{"tenant-a", "tenant-b"},
			},
			"parameters": map[string]any{"provider": "moat", "credentials": "namespace", "reportPending": "reject", "providerError": "reject"},
		},
	}}
	if _, err := e.apply.Apply(ctx, scan); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r, err := e.apply.Resource(scan); err == nil {
			_ = r.Delete(ctx, scan.GetName(), metav1.DeleteOptions{})
		}
	}()
	e.waitEnforced(t, scan)
	e.pointProviders(t, url)
	defer e.pointProviders(t, e.moatURL)

	podA := healthyPod("tenant-a", "private", image)
	podA.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
	var admitted *corev1.Pod
	err = cluster.Poll(ctx, 60*time.Second, func() error {
		var err error
		admitted, err = e.create(podA, true)
		return err
	})
	if err != nil {
		t.Fatalf("tenant-a's private image with its pull Secret: %v", err)
	}
	if got := admitted.Spec.Containers[0].Image; !strings.HasPrefix(got, image+"@sha256:") {
		t.Errorf("tenant-a's image was stored as %s, want it pinned by the mutator", got)
	}
	if teamA() == 0 {
		t.Fatal("the registry saw no request with tenant-a's credentials")
	}

	// tenant-b holds no Secret: its pod is denied with the registry's
	// refusal, though the mutator (cluster-wide) pinned its image.
	_, err = e.create(healthyPod("tenant-b", "private", image), true)
	denied(t, "tenant-b's pod without a pull Secret", err, "e2e-tenant-image-scan", "refused access (HTTP 401)")

	// Even a key of tenant-b that names tenant-a's Secret: the Secret is
	// looked up in tenant-b only, and tenant-a's credentials are not used.
	before := teamA()
	for _, key := range []string{
		"moat.ns.v1:tenant-b/default/regcred:" + image,
		"moat.ns.v1:tenant-b/default/regcred:" + admitted.Spec.Containers[0].Image, // pinned
	} {
		if _, failure := e.lookupAt(t, url, key); !strings.Contains(failure, "refused access (HTTP 401)") {
			t.Errorf("%s: %q, want the registry's refusal", key, failure)
		}
	}
	if after := teamA(); after != before {
		t.Errorf("tenant-b's keys made %d requests with tenant-a's credentials", after-before)
	}
	if d, failure := e.lookupAt(t, url, "moat.ns.v1:tenant-a/default/regcred:"+image); d == "" || failure != "" {
		t.Errorf("tenant-a's own key: %q %q", d, failure)
	}
}
