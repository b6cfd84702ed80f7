package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/e2e/cluster"
)

// basicAuth guards a registry with HTTP basic authentication once a
// password is set, and counts the requests each user made.
type basicAuth struct {
	mu       sync.Mutex
	user     string
	password string // empty: no authentication yet
	byUser   map[string]int
}

func (b *basicAuth) set(user, password string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.user, b.password = user, password
}

func (b *basicAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		want, wantPass := b.user, b.password
		u, p, ok := r.BasicAuth()
		good := wantPass == "" || (ok && u == want && p == wantPass)
		if good && ok {
			b.byUser[u]++
		}
		b.mu.Unlock()
		if !good {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// lookupAt asks the provider at url about key with moat lookup, as
// Gatekeeper's client: the digest it answered, or its per-key error.
func (e *e2e) lookupAt(t *testing.T, url, key string) (digest, failure string) {
	t.Helper()
	certs := filepath.Join(filepath.Dir(e.moatBin), "certs")
	out, err := exec.Command(e.moatBin, "lookup", "-o", "json", "--url", url+"/validate", "--ca", filepath.Join(certs, "ca.crt"),
		"--cert", filepath.Join(e.gk.CertDir, "tls.crt"), "--key", filepath.Join(e.gk.CertDir, "tls.key"), key).Output()
	// Exit code 3: an answer with a per-key error, which is read below.
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 3) {
		t.Fatalf("moat lookup: %v\n%s", err, out)
	}
	var resp struct {
		Response struct {
			Items []struct {
				Value map[string]any `json:"value"`
				Error string         `json:"error"`
			} `json:"items"`
		} `json:"response"`
	}
	must(t, json.Unmarshal(out, &resp))
	if len(resp.Response.Items) != 1 {
		t.Fatalf("moat lookup: %s", out)
	}
	it := resp.Response.Items[0]
	d, _ := it.Value["digest"].(string)
	return d, it.Error
}

// canI reports whether user may do verb on resource name in ns, as the API
// server's authorizer says (a SubjectAccessReview).
func (e *e2e) canI(t *testing.T, user, ns, verb, resource, name string) bool {
	t.Helper()
	sar, err := e.client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: []string{"system:serviceaccounts", "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: resource, Name: name}}}, metav1.CreateOptions{})
	must(t, err)
	return sar.Status.Allowed
}

// applyChartRBAC renders the chart in ns with sets and applies its
// ServiceAccount, Roles and RoleBindings; it returns how many it applied.
func (e *e2e) applyChartRBAC(t *testing.T, ns string, sets ...string) int {
	t.Helper()
	args := []string{"tool", "-modfile=tools/helm/go.mod", "helm", "template", "moat", "charts/moat", "-n", ns,
		"--kube-version", strings.TrimPrefix(e.cl.KubeVersion(), "v")}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	helm := exec.Command("go", args...)
	helm.Dir = root
	rendered, err := helm.Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs, err := cluster.Decode(rendered)
	must(t, err)
	applied := 0
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			if strings.HasSuffix(o.GetName(), "-constraints") {
				continue // the constraints hook's own identity, not the provider's
			}
			if _, err := e.apply.Apply(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			applied++
		}
	}
	return applied
}

// pullSecrets runs a replica as a ServiceAccount with exactly the chart's
// RBAC for pull Secrets, and changes the Secrets and the ServiceAccount
// through the API server while it runs: what it can pull follows them.
func (e *e2e) pullSecrets(t *testing.T, dir string) {
	ctx := context.Background()
	const ns = "moat-creds"
	e.createNamespace(t, ns)
	auth := &basicAuth{byUser: map[string]int{}}
	host := testenv.StartRegistryWith(t, auth.wrap)
	const tags = 12
	for i := range tags {
		testenv.PushRandom(t, host, fmt.Sprintf("private/app:v%d", i))
	}
	auth.set("team", "p1")
	tag := 0
	next := func() string { // a tag no cache has seen
		tag++
		if tag >= tags {
			t.Fatal("out of tags")
		}
		return fmt.Sprintf("%s/private/app:v%d", host, tag)
	}

	// The chart's ServiceAccount, Role and RoleBinding, as rendered.
	if n := e.applyChartRBAC(t, ns, "provider.pullSecrets={"+ns+"/regcred}", "provider.serviceAccountPullSecrets=true",
		"serviceAccount.imagePullSecrets={sa-cred}"); n != 3 {
		t.Fatalf("the chart rendered %d RBAC objects, want a ServiceAccount, a Role and a RoleBinding", n)
	}
	// What the grant allows: each named object, and nothing else. The API
	// server's authorizer sees a new Role within moments: the allowed
	// side is polled until it does, then the denied side is checked.
	user := "system:serviceaccount:" + ns + ":moat"
	err := cluster.Poll(ctx, 30*time.Second, func() error {
		for _, c := range [][3]string{{"watch", "secrets", "regcred"}, {"get", "secrets", "sa-cred"}, {"list", "serviceaccounts", "moat"}} {
			if !e.canI(t, user, ns, c[0], c[1], c[2]) {
				return fmt.Errorf("%s may not %s %s %q", user, c[0], c[1], c[2])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{{"list", "secrets", ""}, {"get", "secrets", "other"}, {"get", "serviceaccounts", "default"}} {
		if e.canI(t, user, ns, c[0], c[1], c[2]) {
			t.Errorf("%s may %s %s %q: the chart grants more than the named objects", user, c[0], c[1], c[2])
		}
	}

	kubeconfig := filepath.Join(dir, "moat-sa.kubeconfig")
	must(t, e.cl.ServiceAccountKubeconfig(ctx, ns, "moat", kubeconfig))
	replica, url, _ := e.startReplicaWith(t, dir, "moat-serve-pull-secrets", "--kubeconfig", kubeconfig,
		"--pull-secrets", ns+"/regcred", "--pull-secrets-of-service-account", ns+"/moat", "--insecure-registries", host, "--error-ttl", "1s")
	defer replica.Stop()

	lookup := func(ref string) (digest, failure string) { return e.lookupAt(t, url, ref) }
	// until polls fresh tags until pulling succeeds (or fails) as wanted.
	until := func(what string, wantPull bool) {
		t.Helper()
		var last string
		err := cluster.Poll(ctx, 30*time.Second, func() error {
			d, failure := lookup(next())
			last = failure
			if wantPull && d != "" && failure == "" {
				return nil
			}
			if !wantPull && strings.Contains(failure, "refused access (HTTP 401)") {
				return nil
			}
			return fmt.Errorf("not yet")
		})
		if err != nil {
			t.Fatalf("%s: the last answer was %q", what, last)
		}
	}
	dockerconfig := func(user, pass string) map[string][]byte {
		a := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		return map[string][]byte{corev1.DockerConfigJsonKey: []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, a))}
	}
	secrets := e.client.CoreV1().Secrets(ns)
	secret := func(name, pass string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeDockerConfigJson, Data: dockerconfig("team", pass)}
	}

	if _, failure := lookup(next()); !strings.Contains(failure, "refused access (HTTP 401)") {
		t.Fatalf("before any Secret: %q, want refused access", failure)
	}
	_, err = secrets.Create(ctx, secret("regcred", "p1"), metav1.CreateOptions{})
	must(t, err)
	until("a Secret created", true)
	auth.mu.Lock()
	used := auth.byUser["team"]
	auth.mu.Unlock()
	if used == 0 {
		t.Error("the registry saw no request with the Secret's credentials")
	}
	_, err = secrets.Update(ctx, secret("regcred", "rotated-wrong"), metav1.UpdateOptions{})
	must(t, err)
	until("the Secret rotated to a wrong password", false)
	_, err = secrets.Update(ctx, secret("regcred", "p1"), metav1.UpdateOptions{})
	must(t, err)
	until("the Secret rotated back", true)
	must(t, secrets.Delete(ctx, "regcred", metav1.DeleteOptions{}))
	until("the Secret deleted", false)

	// The ServiceAccount's imagePullSecrets, followed too.
	_, err = secrets.Create(ctx, secret("sa-cred", "p1"), metav1.CreateOptions{})
	must(t, err)
	until("the ServiceAccount's Secret created", true)
	_, err = e.client.CoreV1().ServiceAccounts(ns).Patch(ctx, "moat", types.MergePatchType, []byte(`{"imagePullSecrets":null}`), metav1.PatchOptions{})
	must(t, err)
	until("the Secret taken off the ServiceAccount", false)
	if strings.Contains(replica.Tail(1<<20), "cannot read") {
		t.Errorf("the replica could not read what the chart granted:\n%s", replica.Tail(4096))
	}
}
