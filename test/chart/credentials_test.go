package chart_test

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// By default no Moat pod reads the Kubernetes API: no Role, no token.
func TestNoAPIAccessWithoutPullSecrets(t *testing.T) {
	objs := render(t, "scanner.mode=service")
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
