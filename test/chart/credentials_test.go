package chart_test

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// By default no Moat pod reads the Kubernetes API: no Role, no token.
func TestNoAPIAccessWithoutPullSecrets(t *testing.T) {
	objs := withoutConstraintsHook(render(t, "scanner.mode=service"))
	if n := count(objs, "Role") + count(objs, "RoleBinding") + count(objs, "ClusterRole"); n != 0 {
		t.Errorf("%d RBAC objects without pull secrets", n)
	}
	for _, name := range []string{"moat", "moat-scanner"} {
		if mount, _, _ := unstructured.NestedBool(find(objs, "Deployment", name).Object, "spec", "template", "spec", "automountServiceAccountToken"); mount {
			t.Errorf("%s mounts a ServiceAccount token without pull secrets", name)
		}
	}
	a := args(t, objs)
	for _, want := range []string{"--azure-identity=auto", "--aws-identity=auto", "--gcp-identity=auto"} {
		if !slices.Contains(a, want) {
			t.Errorf("the settings lack %s: %v", want, a)
		}
	}
}

// Pull secrets: each named Secret is readable by name in its namespace,
// and no other; the ServiceAccount's only when asked for; both pods that
// pull (provider, scanner service) mount a token and get the settings.
func TestPullSecretsGetTheNarrowestGrant(t *testing.T) {
	objs := render(t, "scanner.mode=service", "provider.pullSecrets={team-a/regcred,team-a/mirror,team-b/regcred}",
		"provider.serviceAccountPullSecrets=true", "serviceAccount.imagePullSecrets={sa-cred}", "provider.identities.aws=off")
	want := map[string][]string{"team-a": {"regcred", "mirror"}, "team-b": {"regcred"}, "gatekeeper-system": {"sa-cred"}}
	roles := 0
	for _, o := range objs {
		if o.GetKind() != "Role" {
			continue
		}
		roles++
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		var secrets []string
		sawAccount := false
		for _, r := range rules {
			rule := r.(map[string]any)
			verbs := toStrings(rule["verbs"])
			if !slices.Equal(verbs, []string{"get", "list", "watch"}) {
				t.Errorf("%s/%s grants %v", o.GetNamespace(), o.GetName(), verbs)
			}
			names := toStrings(rule["resourceNames"])
			if len(names) == 0 {
				t.Errorf("%s/%s grants a rule on every object: %v", o.GetNamespace(), o.GetName(), rule)
			}
			switch res := toStrings(rule["resources"]); {
			case slices.Equal(res, []string{"secrets"}):
				secrets = append(secrets, names...)
			case slices.Equal(res, []string{"serviceaccounts"}):
				sawAccount = true
				if o.GetNamespace() != "gatekeeper-system" || !slices.Equal(names, []string{"moat"}) {
					t.Errorf("the ServiceAccount rule is %s %v", o.GetNamespace(), names)
				}
			default:
				t.Errorf("%s/%s grants %v", o.GetNamespace(), o.GetName(), res)
			}
		}
		if !slices.Equal(secrets, want[o.GetNamespace()]) {
			t.Errorf("the Role in %s grants secrets %v, want %v", o.GetNamespace(), secrets, want[o.GetNamespace()])
		}
		if sawAccount != (o.GetNamespace() == "gatekeeper-system") {
			t.Errorf("the Role in %s: ServiceAccount rule %v", o.GetNamespace(), sawAccount)
		}
		b := find(objs, "RoleBinding", o.GetName())
		if b == nil {
			t.Fatalf("no RoleBinding for %s", o.GetName())
		}
		subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
		if len(subjects) != 1 || subjects[0].(map[string]any)["name"] != "moat" || subjects[0].(map[string]any)["namespace"] != "gatekeeper-system" {
			t.Errorf("the binding of %s is to %v", o.GetName(), subjects)
		}
	}
	if roles != 3 {
		t.Errorf("%d Roles, want one per namespace (3)", roles)
	}
	for _, name := range []string{"moat", "moat-scanner"} {
		if mount, _, _ := unstructured.NestedBool(find(objs, "Deployment", name).Object, "spec", "template", "spec", "automountServiceAccountToken"); !mount {
			t.Errorf("%s reads pull secrets without a ServiceAccount token", name)
		}
	}
	for file, a := range map[string][]string{"serve.yaml": args(t, objs), "scanner.yaml": settings(t, objs, "scanner.yaml")} {
		for _, want := range []string{"--pull-secrets=team-a/regcred,team-a/mirror,team-b/regcred",
			"--pull-secrets-of-service-account=gatekeeper-system/moat", "--aws-identity=off"} {
			if !slices.Contains(a, want) {
				t.Errorf("%s lacks %s: %v", file, want, a)
			}
		}
	}
	sa := find(objs, "ServiceAccount", "moat")
	ips, _, _ := unstructured.NestedSlice(sa.Object, "imagePullSecrets")
	if len(ips) != 1 || ips[0].(map[string]any)["name"] != "sa-cred" {
		t.Errorf("the ServiceAccount's imagePullSecrets are %v", ips)
	}
}

func TestCredentialValuesAreChecked(t *testing.T) {
	for _, set := range []string{"provider.pullSecrets={regcred}", "provider.pullSecrets={Team/regcred}",
		"provider.identities.azure=yes", "serviceAccount.imagePullSecrets={a/b}", "provider.config.pull-secrets=a/b",
		"provider.config.azure-identity=on"} {
		out, err := helmErr("template", "moat", "charts/moat", "-n", "gatekeeper-system", "--kube-version", "1.34.0", "--set", set)
		if err == nil {
			t.Errorf("%s accepted", set)
		} else if !strings.Contains(out, "pullSecrets") && !strings.Contains(out, "identities") && !strings.Contains(out, "imagePullSecrets") && !strings.Contains(out, "set by the chart") {
			t.Errorf("%s refused without naming the value: %s", set, out)
		}
	}
}

// Namespace credentials are opt-in and as narrow as their list: a Role in
// each namespace listed, a ClusterRole only for ["*"].
func TestNamespaceCredentialsGrantOnlyTheListedNamespaces(t *testing.T) {
	objs := withoutConstraintsHook(render(t, "provider.namespaceCredentials={team-a,team-b}", "imagePolicy.enabled=true",
		"imagePolicy.credentials=namespace", "imagePolicy.byNamespace.prod.credentials=cluster"))
	if n := count(objs, "ClusterRole") + count(objs, "ClusterRoleBinding"); n != 0 {
		t.Errorf("%d cluster-wide RBAC objects for two namespaces", n)
	}
	var namespaces []string
	for _, o := range objs {
		if o.GetKind() != "Role" || o.GetName() != "moat-namespace-credentials" {
			continue
		}
		namespaces = append(namespaces, o.GetNamespace())
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		if len(rules) != 1 || !slices.Equal(toStrings(rules[0].(map[string]any)["resources"]), []string{"secrets", "serviceaccounts"}) ||
			!slices.Equal(toStrings(rules[0].(map[string]any)["verbs"]), []string{"get", "list", "watch"}) {
			t.Errorf("the Role in %s grants %v", o.GetNamespace(), rules)
		}
		bound := false
		for _, b := range objs {
			bound = bound || (b.GetKind() == "RoleBinding" && b.GetName() == o.GetName() && b.GetNamespace() == o.GetNamespace())
		}
		if !bound {
			t.Errorf("no RoleBinding beside the Role in %s", o.GetNamespace())
		}
	}
	slices.Sort(namespaces)
	if !slices.Equal(namespaces, []string{"team-a", "team-b"}) {
		t.Errorf("Roles in %v, want team-a and team-b", namespaces)
	}
	if !slices.Contains(args(t, objs), "--namespace-credentials=team-a,team-b") {
		t.Errorf("the settings lack --namespace-credentials: %v", args(t, objs))
	}
	if mount, _, _ := unstructured.NestedBool(find(objs, "Deployment", "moat").Object, "spec", "template", "spec", "automountServiceAccountToken"); !mount {
		t.Error("the provider reads namespace credentials without a ServiceAccount token")
	}
	for name, want := range map[string]string{"moat-image-scan": "namespace", "moat-image-scan-prod": "cluster"} {
		c := find(objs, "MoatImageScan", name)
		if c == nil {
			t.Fatalf("no MoatImageScan %s", name)
		}
		if got, _, _ := unstructured.NestedString(c.Object, "spec", "parameters", "credentials"); got != want {
			t.Errorf("%s: credentials %q, want %q", name, got, want)
		}
	}

	all := withoutConstraintsHook(render(t, "provider.namespaceCredentials={*}"))
	if count(all, "ClusterRole") != 1 || count(all, "ClusterRoleBinding") != 1 || count(all, "Role") != 0 {
		t.Errorf("[*]: %d ClusterRoles, %d bindings, %d Roles; want one ClusterRole and its binding", count(all, "ClusterRole"), count(all, "ClusterRoleBinding"), count(all, "Role"))
	}
	for _, set := range []string{"provider.namespaceCredentials={*,team-a}", "provider.namespaceCredentials={Team}", "imagePolicy.credentials=tenant"} {
		if _, err := helmErr("template", "moat", "charts/moat", "-n", "gatekeeper-system", "--kube-version", "1.34.0", "--set", set); err == nil {
			t.Errorf("%s accepted", set)
		}
	}
}
