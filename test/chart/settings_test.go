package chart_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// moat builds the binary once for the tests that ask it about settings.
var moat = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "moat-chart")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "moat")
	cmd := exec.Command("go", "build", "-o", bin, "./provider/cmd/moat")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &exec.ExitError{Stderr: out}
	}
	return bin, nil
})

// effective is what `moat COMMAND --check-config` prints: every setting,
// in the binary's own spelling, after the config file and the flags.
func effective(t *testing.T, command string, args ...string) map[string]string {
	t.Helper()
	bin, err := moat()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, append([]string{command, "--check-config"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("moat %s --check-config %v: %v\n%s", command, args, err, out)
	}
	var m map[string]string
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	return m
}

// The chart's settings are the binary's defaults except where the chart
// chooses otherwise, and each such choice is named here with its reason;
// the binary accepts every file the chart renders.
func TestChartSettingsAreTheBinaryDefaultsOrNamedChoices(t *testing.T) {
	choices := map[string]string{
		"tls-cert": "the mounted certificate", "tls-key": "the mounted certificate", "client-ca": "the mounted CA",
		"shutdown-delay": "endpoints drop a terminating pod before it stops serving",
		"scanner":        "scanner.mode", "scanner-url": "the scanner Service", "scanner-ca": "the scanner's certificates",
		"scanner-cert": "the scanner's certificates", "scanner-key": "the scanner's certificates",
		"db-dir": "the emptyDir volume", "db-url": "the chart downloads Grype's database; the binary is offline unless told",
		"registry-config": "the mounted pull secret",
		"redis-url":       "sharedState.mode (bundled by default: two replicas must agree)", "redis-password-file": "the shared-state Secret",
		"redis-mac-key-file": "the shared-state Secret",
		"node-report-ca":     "the mounted node-scan CA", "provider-url": "the provider Service's node-report port",
		"provider-ca": "the mounted CA of the provider's certificate",
	}
	server := []string{"--tls-cert", "x", "--tls-key", "x", "--client-ca", "x"}
	// The node scanner's name comes from the pod (NODE_NAME): given here.
	nodeScan := []string{"--node-name", "n1", "--provider-url", "x", "--provider-ca", "x", "--tls-cert", "x", "--tls-key", "x", "--db-url", "x"}
	for _, c := range []struct {
		command, file string
		sets          []string
		required      []string
	}{
		{"serve", "serve.yaml", nil, server},
		{"serve", "serve.yaml", []string{"scanner.mode=embedded"}, server},
		{"serve", "serve.yaml", []string{"scanner.mode=service", "provider.registryCredentialsSecret=pull"}, server},
		{"serve", "serve.yaml", []string{"nodeScan.enabled=true"}, server},
		{"scanner", "scanner.yaml", []string{"scanner.mode=service"}, server},
		{"node-scan", "node-scan.yaml", []string{"nodeScan.enabled=true"}, nodeScan},
	} {
		objs := render(t, c.sets...)
		body, _, _ := unstructured.NestedString(find(objs, "ConfigMap", "moat-config").Object, "data", c.file)
		file := filepath.Join(t.TempDir(), c.file)
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		var rendered map[string]any
		if err := yaml.Unmarshal([]byte(body), &rendered); err != nil {
			t.Fatal(err)
		}
		given := []string{"--config", file}
		if c.command == "node-scan" {
			given = append(given, "--node-name", "n1")
		}
		got := effective(t, c.command, given...)
		def := effective(t, c.command, c.required...)
		for k := range rendered {
			if got[k] != def[k] && choices[k] == "" {
				t.Errorf("%v: the chart sets %s to %q, the binary's default is %q: use the default, or name the choice in this test and the chart README",
					c.sets, k, got[k], def[k])
			}
		}
	}
}

// provider.config takes any other setting by flag name, and refuses what
// the chart wires itself.
func TestProviderConfigValues(t *testing.T) {
	a := args(t, render(t, "provider.config.stale-while-revalidate=1m", "provider.config.scan-wait=0s"))
	if !hasPrefix(a, "--stale-while-revalidate=1m") {
		t.Errorf("provider.config not applied: %v", a)
	}
	out, err := helmErr("template", "moat", "charts/moat", "--kube-version", "1.34.0", "--set", "provider.config.tls-cert=/x")
	if err == nil || !strings.Contains(out, "provider.config.tls-cert is set by the chart") {
		t.Errorf("a chart-owned setting in provider.config: %v\n%s", err, out)
	}
}

// The conventions users of Gatekeeper's and Ratify's charts expect.
func TestChartConventions(t *testing.T) {
	objs := render(t, "fullnameOverride=trust", "podAnnotations.team=sec", "podLabels.tier=admission",
		"image.pullSecrets[0].name=regcred", "serviceAccount.annotations.azure\\.workload\\.identity/client-id=abc",
		"scanner.mode=service", "scanner.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
		"scanner.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists")
	for _, name := range []string{"trust", "trust-scanner"} {
		d := find(objs, "Deployment", name)
		if d == nil {
			t.Fatalf("no Deployment %s (fullnameOverride)", name)
		}
		spec, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
		meta, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "metadata")
		if meta["annotations"].(map[string]any)["team"] != "sec" || meta["labels"].(map[string]any)["tier"] != "admission" {
			t.Errorf("%s: pod metadata %v", name, meta)
		}
		if spec["serviceAccountName"] != "trust" || spec["imagePullSecrets"] == nil {
			t.Errorf("%s: serviceAccountName %v, imagePullSecrets %v", name, spec["serviceAccountName"], spec["imagePullSecrets"])
		}
		wantPriority := map[string]any{"trust": "system-cluster-critical", "trust-scanner": nil}[name]
		if spec["priorityClassName"] != wantPriority {
			t.Errorf("%s: priorityClassName %v, want %v", name, spec["priorityClassName"], wantPriority)
		}
		if (name == "trust-scanner") != (spec["affinity"] != nil) {
			t.Errorf("%s: affinity %v", name, spec["affinity"])
		}
	}
	sa := find(objs, "ServiceAccount", "trust")
	if sa == nil || sa.GetAnnotations()["azure.workload.identity/client-id"] != "abc" {
		t.Errorf("ServiceAccount: %v", sa)
	}
	if p := find(objs, "Provider", "trust"); p == nil {
		t.Error("the Provider does not follow fullnameOverride")
	}
	if objs := render(t, "nameOverride=gate"); find(objs, "Deployment", "moat-gate") == nil || find(objs, "Deployment", "moat-gate").GetLabels()["app.kubernetes.io/name"] != "gate" {
		t.Error("nameOverride: want Deployment moat-gate labelled app.kubernetes.io/name=gate")
	}
	// The constraints hook has its own ServiceAccount whatever the provider's is.
	if objs := withoutConstraintsHook(render(t, "serviceAccount.create=false")); find(objs, "ServiceAccount", "") != nil {
		t.Error("serviceAccount.create=false still creates one")
	}
}
