package chart_test

import (
	"encoding/base64"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The default install shares state through its own Valkey: pinned by
// digest, its password out of the command line, reachable only from the
// provider's pods, and the secrets kept across upgrades.
func TestSharedStateBundledByDefault(t *testing.T) {
	objs := render(t)
	a := args(t, objs)
	for _, want := range []string{"--redis-url=redis://moat-redis.gatekeeper-system.svc:6379", "--redis-password-file=/etc/moat/redis/password",
		"--redis-mac-key-file=/etc/moat/redis/mac-key", "--redis-prefix=moat:", "--redis-budget=30ms"} {
		if !slices.Contains(a, want) {
			t.Errorf("the provider's settings lack %s: %v", want, a)
		}
	}
	sts := find(objs, "StatefulSet", "moat-redis")
	if sts == nil {
		t.Fatal("no moat-redis StatefulSet")
	}
	cs, _, _ := unstructured.NestedSlice(sts.Object, "spec", "template", "spec", "containers")
	c := cs[0].(map[string]any)
	if img := c["image"].(string); !regexp.MustCompile(`@sha256:[0-9a-f]{64}$`).MatchString(img) {
		t.Errorf("the Valkey image %s is not pinned by digest", img)
	}
	if cmd := strings.Join(toStrings(c["command"]), " "); strings.Contains(cmd, "pass") {
		t.Errorf("the password is on the command line: %s", cmd)
	}
	sec := find(objs, "Secret", "moat-shared-state")
	if sec == nil {
		t.Fatal("no moat-shared-state Secret")
	}
	if sec.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Error("the shared-state Secret is not kept: an uninstall and reinstall would change the MAC key")
	}
	data := map[string]string{}
	for k, v := range sec.Object["data"].(map[string]any) {
		b, err := base64.StdEncoding.DecodeString(v.(string))
		if err != nil {
			t.Fatal(err)
		}
		data[k] = string(b)
	}
	if len(data["mac-key"]) < 32 || len(data["password"]) < 32 {
		t.Errorf("mac-key of %d bytes, password of %d: want 32 or more", len(data["mac-key"]), len(data["password"]))
	}
	if !strings.Contains(data["valkey.conf"], "requirepass "+data["password"]+"\n") || !strings.Contains(data["valkey.conf"], "maxmemory-policy volatile-lru") {
		t.Errorf("valkey.conf does not hold the password and the eviction policy:\n%s", data["valkey.conf"])
	}
	np := find(objs, "NetworkPolicy", "moat-redis")
	if np == nil {
		t.Fatal("no NetworkPolicy for the shared tier")
	}
	from, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
	sel, _, _ := unstructured.NestedStringMap(from[0].(map[string]any)["from"].([]any)[0].(map[string]any), "podSelector", "matchLabels")
	if sel["app.kubernetes.io/name"] != "moat" || len(from) != 1 {
		t.Errorf("the shared tier is reachable from %v, want the provider's pods only", from)
	}
}

func TestSharedStateExternalAndNone(t *testing.T) {
	none := render(t, "sharedState.mode=none")
	if find(none, "StatefulSet", "moat-redis") != nil || find(none, "Secret", "moat-shared-state") != nil {
		t.Error("mode none renders the shared tier")
	}
	for _, a := range args(t, none) {
		if strings.HasPrefix(a, "--redis") {
			t.Errorf("mode none sets %s", a)
		}
	}
	ext := render(t, "sharedState.mode=external", "sharedState.external.url=rediss://cache.example.com:6380",
		"sharedState.external.passwordSecret=cache", "sharedState.external.tlsSecret=cache-tls", "sharedState.external.clientCertificate=true")
	if find(ext, "StatefulSet", "moat-redis") != nil {
		t.Error("mode external runs a server of its own")
	}
	a := args(t, ext)
	for _, want := range []string{"--redis-url=rediss://cache.example.com:6380", "--redis-ca=/etc/moat/redis-tls/ca.crt",
		"--redis-cert=/etc/moat/redis-tls/tls.crt", "--redis-key=/etc/moat/redis-tls/tls.key"} {
		if !slices.Contains(a, want) {
			t.Errorf("external: the provider's settings lack %s: %v", want, a)
		}
	}
	for _, bad := range [][]string{{"sharedState.mode=external"}, {"sharedState.mode=external", "sharedState.external.url=rediss://x:6380"}} {
		cmdArgs := []string{"tool", "-modfile=tools/helm/go.mod", "helm", "template", "moat", "charts/moat", "--kube-version", "1.34.0"}
		for _, s := range bad {
			cmdArgs = append(cmdArgs, "--set", s)
		}
		cmd := exec.Command("go", cmdArgs...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "sharedState.external") {
			t.Errorf("%v: %v, want a refusal naming sharedState.external\n%s", bad, err, out)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
