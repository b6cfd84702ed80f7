// Package chart_test renders the Helm chart with helm itself (pinned in
// tools/helm) and checks what it installs: certificates that verify,
// deadlines inside Gatekeeper's timeouts, the constraint sets asked for, and
// pods that pass Moat's own Pod Security Standards and Defender rules.
package chart_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator/reader"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/moat-dev/moat/test/pack"
)

const root = pack.Root

func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "-modfile=tools/helm/go.mod", "helm"}, args...)...)
	cmd.Dir = root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// helmErr runs helm and returns its combined output and error.
func helmErr(args ...string) (string, error) {
	cmd := exec.Command("go", append([]string{"tool", "-modfile=tools/helm/go.mod", "helm"}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// render is `helm template` in gatekeeper-system, parsed into objects. Each
// of sets is a --set, or "-f=FILE" for a values file.
func render(t *testing.T, sets ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", "moat", "charts/moat", "-n", "gatekeeper-system", "--kube-version", "1.34.0"}
	for _, s := range sets {
		if f, ok := strings.CutPrefix(s, "-f="); ok {
			args = append(args, "-f", f)
			continue
		}
		args = append(args, "--set", s)
	}
	return decode(helm(t, args...), true)
}

// decode splits rendered YAML into objects. With expand, the constraints in
// the <release>-constraints ConfigMap are added as objects too: the
// constraints hook applies them as they are (templates/constraints.yaml).
func decode(rendered string, expand bool) []*unstructured.Unstructured {
	var objs []*unstructured.Unstructured
	for _, doc := range strings.Split(rendered, "\n---") {
		u, err := reader.ReadUnstructured([]byte(doc))
		if err != nil || u == nil || u.GetKind() == "" {
			continue
		}
		objs = append(objs, u)
		if expand && u.GetKind() == "ConfigMap" && strings.HasSuffix(u.GetName(), "-constraints") {
			data, _, _ := unstructured.NestedStringMap(u.Object, "data")
			for _, file := range slices.Sorted(maps.Keys(data)) {
				objs = append(objs, decode(data[file], false)...)
			}
		}
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	return nil
}

func TestLintStrict(t *testing.T) {
	helm(t, "lint", "--strict", "charts/moat", "--kube-version", "1.34.0")
}

func TestCertificatesVerifyAndProvidersTrustThem(t *testing.T) {
	objs := render(t)
	secret := find(objs, "Secret", "moat-tls")
	if secret == nil {
		t.Fatal("no moat-tls secret")
	}
	data, _, _ := unstructured.NestedStringMap(secret.Object, "data")
	pemOf := func(k string) []byte {
		b, err := base64.StdEncoding.DecodeString(data[k])
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return b
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemOf("ca.crt")) {
		t.Fatal("ca.crt is not a certificate")
	}
	block, _ := pem.Decode(pemOf("tls.crt"))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "moat.gatekeeper-system.svc", CurrentTime: time.Now()}); err != nil {
		t.Errorf("serving certificate does not verify for the Service name: %v", err)
	}
	for _, name := range []string{"moat", "moat-mutate"} {
		p := find(objs, "Provider", name)
		if p == nil {
			t.Fatalf("no Provider %s", name)
		}
		ca, _, _ := unstructured.NestedString(p.Object, "spec", "caBundle")
		if ca != data["ca.crt"] {
			t.Errorf("Provider %s caBundle is not the CA that signed the serving certificate", name)
		}
		url, _, _ := unstructured.NestedString(p.Object, "spec", "url")
		if !strings.HasPrefix(url, "https://moat.gatekeeper-system.svc:8443/") {
			t.Errorf("Provider %s url %q", name, url)
		}
	}
}

// args are the provider's settings (serve.yaml of the chart's ConfigMap) as
// the flags they stand for: "--name=value", lists joined by commas, and
// "--name" alone for a true boolean.
func args(t *testing.T, objs []*unstructured.Unstructured) []string {
	return settings(t, objs, "serve.yaml")
}

func settings(t *testing.T, objs []*unstructured.Unstructured, file string) []string {
	t.Helper()
	cm := find(objs, "ConfigMap", "moat-config")
	if cm == nil {
		t.Fatal("no moat-config ConfigMap")
	}
	body, ok, _ := unstructured.NestedString(cm.Object, "data", file)
	if !ok {
		return nil
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []string
	for k, v := range m {
		switch x := v.(type) {
		case bool:
			if x {
				out = append(out, "--"+k)
			}
		case []any:
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = fmt.Sprint(e)
			}
			out = append(out, "--"+k+"="+strings.Join(parts, ","))
		case float64:
			out = append(out, fmt.Sprintf("--%s=%d", k, int64(x)))
		default:
			out = append(out, fmt.Sprintf("--%s=%v", k, x))
		}
	}
	slices.Sort(out)
	return out
}

func TestDeadlinesStayInsideProviderTimeouts(t *testing.T) {
	objs := render(t)
	for _, c := range []struct{ provider, flag string }{{"moat", "--validate-deadline="}, {"moat-mutate", "--mutate-deadline="}} {
		timeout, _, _ := unstructured.NestedInt64(find(objs, "Provider", c.provider).Object, "spec", "timeout")
		var deadline time.Duration
		for _, a := range args(t, objs) {
			if v, ok := strings.CutPrefix(a, c.flag); ok {
				deadline, _ = time.ParseDuration(v)
			}
		}
		if deadline <= 0 || deadline >= time.Duration(timeout)*time.Second {
			t.Errorf("%s %s is not inside the Provider's timeout of %ds", c.flag, deadline, timeout)
		}
	}
}

func TestSwitches(t *testing.T) {
	def := render(t)
	shipped, _ := filepath.Glob(filepath.Join(root, "templates", "*.yaml"))
	if n := count(def, "ConstraintTemplate"); n != len(shipped) {
		t.Errorf("default: %d ConstraintTemplates, want all %d of templates/", n, len(shipped))
	}
	if constraints(def) != 0 {
		t.Errorf("default installs %d constraints, want none until asked", constraints(def))
	}
	all := render(t, "policies.defender.enabled=true", "policies.podSecurity.level=restricted",
		"policies.podSecurity.enforcementAction=warn", "policies.podSecurity.version=v1.33", "policies.exemptNamespaces={monitoring}",
		"provider.registryCredentialsSecret=pull", "image.digest=sha256:"+strings.Repeat("ab", 32))
	want := len(glob(t, "defender")) + len(glob(t, "pss/baseline")) + len(glob(t, "pss/restricted")) - 4
	if n := constraints(all); n != want {
		t.Errorf("defender + restricted: %d constraints, want %d (restricted replaces 4 baseline ones)", n, want)
	}
	caps := find(all, "MoatCapabilities", "pss-capabilities")
	allowed, _, _ := unstructured.NestedStringSlice(caps.Object, "spec", "parameters", "allowedCapabilities")
	if !slices.Equal(allowed, []string{"NET_BIND_SERVICE"}) {
		t.Errorf("pss-capabilities is the baseline one (%v), want restricted's", allowed)
	}
	if a, _, _ := unstructured.NestedString(caps.Object, "spec", "enforcementAction"); a != "warn" {
		t.Errorf("podSecurity.enforcementAction not applied: %q", a)
	}
	for _, c := range all {
		set := c.GetLabels()["moat.dev/set"]
		v, _, _ := unstructured.NestedString(c.Object, "spec", "parameters", "version")
		switch {
		case strings.HasPrefix(set, "pss-") && v != "v1.33":
			t.Errorf("%s %s: version %q, want podSecurity.version v1.33", c.GetKind(), c.GetName(), v)
		case !strings.HasPrefix(set, "pss-") && v != "":
			t.Errorf("%s %s of set %q: version %q, want none", c.GetKind(), c.GetName(), set, v)
		}
	}
	ex, _, _ := unstructured.NestedStringSlice(find(all, "MoatPrivileged", "defender-privileged").Object, "spec", "match", "excludedNamespaces")
	for _, want := range []string{"kube-system", "gatekeeper-system", "monitoring"} {
		if !slices.Contains(ex, want) {
			t.Errorf("excludedNamespaces %v lacks %s", ex, want)
		}
	}
	d := find(all, "Deployment", "moat")
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if img := cs[0].(map[string]any)["image"]; img != "ghcr.io/moat-dev/moat@sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("image %v, want pulled by digest", img)
	}
	if !slices.Contains(args(t, all), "--registry-config=/etc/moat/registry/.dockerconfigjson") {
		t.Error("registry credentials not wired")
	}
}

// Defender's allowed-images rule admits no image by default; with the
// Defender set enforced that denies every pod, so the chart takes the
// registries from values. The default stays Defender's.
func TestDefenderAllowedImages(t *testing.T) {
	regex := func(objs []*unstructured.Unstructured) string {
		c := find(objs, "MoatTrustedRegistries", "defender-allowed-images")
		if c == nil {
			t.Fatal("no defender-allowed-images constraint")
		}
		r, _, _ := unstructured.NestedString(c.Object, "spec", "parameters", "allowedContainerImagesRegex")
		return r
	}
	if r := regex(render(t, "policies.defender.enabled=true")); r != "^(.+){0}$" {
		t.Errorf("default: %q, want Defender's own default", r)
	}
	// A values file: --set would take the backslashes as its own escapes.
	want := `^(myregistry\.azurecr\.io|ghcr\.io/acme)/.+$`
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte("policies:\n  defender:\n    allowedImagesRegex: '"+want+"'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := regex(render(t, "policies.defender.enabled=true", "-f="+f)); r != want {
		t.Errorf("allowedImagesRegex: %q, want %q", r, want)
	}
}

func glob(t *testing.T, set string) []string {
	m, err := filepath.Glob(filepath.Join(root, "constraints", set, "*.yaml"))
	if err != nil || len(m) == 0 {
		t.Fatalf("constraints/%s: %v", set, err)
	}
	return m
}

func TestDigestMutatorSwitch(t *testing.T) {
	if n := count(render(t), "Assign"); n != 0 {
		t.Errorf("default renders %d Assign mutators, want none", n)
	}
	objs := render(t, "mutation.pinDigests=true")
	if n := count(objs, "Assign"); n != 3 {
		t.Fatalf("%d Assign mutators, want 3", n)
	}
	for _, o := range objs {
		if o.GetKind() != "Assign" {
			continue
		}
		p, _, _ := unstructured.NestedString(o.Object, "spec", "parameters", "assign", "externalData", "provider")
		ex, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "match", "excludedNamespaces")
		if p != "moat-mutate" || find(objs, "Provider", p) == nil || !slices.Contains(ex, "gatekeeper-system") {
			t.Errorf("%s: provider %q, excluded %v", o.GetName(), p, ex)
		}
	}
}

func count(objs []*unstructured.Unstructured, kind string) int {
	n := 0
	for _, o := range objs {
		if o.GetKind() == kind {
			n++
		}
	}
	return n
}

func constraints(objs []*unstructured.Unstructured) int {
	n := 0
	for _, o := range objs {
		if strings.HasPrefix(o.GetAPIVersion(), "constraints.gatekeeper.sh/") {
			n++
		}
	}
	return n
}

// The chart's own pods must pass Moat's Pod Security Standards (restricted)
// and every Defender rule but the registry allow-list, which only the user
// can fill in: Moat passes its own policies. Defender's AppArmor rule asks
// for a profile, which only nodes with AppArmor accept: appArmorProfile is
// set as a user with such nodes sets it, and without it that rule alone
// breaks.
func TestOwnPodsPassMoatsPolicies(t *testing.T) {
	for _, c := range []struct {
		appArmor string
		broken   string // the one rule every pod breaks, or none
	}{{"RuntimeDefault", ""}, {"", "defender-apparmor"}} {
		objs := render(t, "policies.defender.enabled=true", "policies.podSecurity.level=restricted", "scanner.mode=service", "appArmorProfile="+c.appArmor)
		client := pack.NewClient(t, true)
		pack.AddTemplates(t, client) // all but the external-data ones, which gator cannot load
		added := 0
		for _, o := range objs {
			if strings.HasPrefix(o.GetAPIVersion(), "constraints.gatekeeper.sh/") && o.GetName() != "defender-allowed-images" {
				// Judge the pod as if it ran elsewhere: the chart exempts its own namespace.
				unstructured.RemoveNestedField(o.Object, "spec", "match", "excludedNamespaces")
				if _, err := client.AddConstraint(context.Background(), o); err != nil {
					t.Fatal(err)
				}
				added++
			}
		}
		if added < 25 {
			t.Fatalf("only %d constraints judged the pods", added)
		}
		for _, w := range []struct{ kind, name string }{{"Deployment", "moat"}, {"Deployment", "moat-scanner"},
			{"Job", "moat-constraints-apply"}, {"Job", "moat-constraints-delete"}, {"Pod", "moat-test-provider"}} {
			d := find(objs, w.kind, w.name)
			tmpl, _, _ := unstructured.NestedMap(d.Object, "spec", "template")
			if w.kind == "Pod" {
				tmpl = d.DeepCopy().Object
			}
			pod := &unstructured.Unstructured{Object: tmpl}
			pod.SetAPIVersion("v1")
			pod.SetKind("Pod")
			pod.SetName(w.name)
			pod.SetNamespace("apps")
			resp, err := client.Review(context.Background(), pod)
			if err != nil {
				t.Fatal(err)
			}
			var broken []string
			for _, r := range resp.Results() {
				broken = append(broken, r.Constraint.GetName())
				if r.Constraint.GetName() != c.broken {
					js, _ := yaml.Marshal(pod.Object)
					t.Errorf("appArmorProfile %q: %s: %s: %s\n%s", c.appArmor, w.name, r.Constraint.GetName(), r.Msg, js)
				}
			}
			if c.broken != "" && !slices.Contains(broken, c.broken) {
				t.Errorf("appArmorProfile %q: %s does not break %s", c.appArmor, w.name, c.broken)
			}
		}
	}
}

// The Dockerfile's claims that can be checked without a Docker engine: base
// images pinned by digest, a static build, a distroless or scratch final stage with no shell, a
// numeric non-root user, and an exec-form entrypoint.
var pinned = regexp.MustCompile(`^[^@\s]+@sha256:[0-9a-f]{64}$`)

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var from, user, entry string
	static := false
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "FROM":
			from, user = f[1], "" // each stage starts as root
			if !pinned.MatchString(from) {
				t.Errorf("FROM %s is not pinned by digest", from)
			}
		case "USER":
			user = f[1]
		case "ENTRYPOINT":
			entry = strings.Join(f[1:], " ")
		case "RUN":
			if strings.Contains(line, "CGO_ENABLED=0") {
				static = true
				if !strings.Contains(line, "-tags moat_slim") {
					t.Error("the image's binary is not the slim build (-tags moat_slim)")
				}
			}
		}
	}
	if !static {
		t.Error("the binary is not built with CGO_ENABLED=0")
	}
	if !strings.Contains(from, "distroless/static") && from != "scratch" {
		t.Errorf("final stage %q is not distroless static or scratch", from)
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" || strings.Trim(uid, "0123456789") != "" {
		t.Errorf("USER %q is not a numeric non-root user", user)
	}
	if !strings.HasPrefix(entry, "[") {
		t.Errorf("ENTRYPOINT %q is not exec form (the image has no shell)", entry)
	}
}

// A misspelt or out-of-range value is refused at install, not ignored.
func TestValuesSchemaRefusesMistakes(t *testing.T) {
	for _, bad := range []string{"policies.podSecurity.level=strict", "policies.podSecurity.version=1.33", "policies.podSecurity.version=v1.33.0",
		"sharedState.mode=on", "sharedState.budget=0s", "sharedState.bundled.image.digest=latest", "providers.mutate.timeout=2", "provider.validateDeadline=2", "replicas=3",
		"scanner.mode=on", "scanner.policy.max.severe=1", "scanner.timeout=2",
		"imagePolicy.defaultPolicy=maybe", "imagePolicy.byNamespace.prod.alwaysAccep=x", "imagePolicy.byNamespace.Prod.scanFailed=accept",
		"imagePolicy.grace.critical=0h", "imagePolicy.grace.critical=3d", "imagePolicy.byNamespace.prod.grace.high=-1h", "imagePolicy.grace.severe=1h",
		"imagePolicy.admitRunning=yes", "scanner.policy.grace.critical=0s", "scanner.vex.configMap=Not_A_Name"} {
		cmd := exec.Command("go", "tool", "-modfile=tools/helm/go.mod", "helm", "template", "moat", "charts/moat", "--kube-version", "1.34.0", "--set", bad)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "values don't meet the specifications of the schema") {
			t.Errorf("--set %s: %v\n%s", bad, err, out)
		}
	}
}
