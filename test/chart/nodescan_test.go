package chart_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/moat-dev/moat/test/pack"
)

func TestNodeScanIsOptInAndWiredToTheProvider(t *testing.T) {
	if objs := render(t); find(objs, "DaemonSet", "moat-node-scan") != nil || find(objs, "Provider", "moat-nodes") != nil {
		t.Fatal("node scanning is opt-in")
	}
	objs := render(t, "nodeScan.enabled=true", "networkPolicy.enabled=true")
	ds := find(objs, "DaemonSet", "moat-node-scan")
	if ds == nil {
		t.Fatal("no DaemonSet")
	}

	// The node scanner's client certificate chains to the CA the provider takes reports from, and only that.
	data, _, _ := unstructured.NestedStringMap(find(objs, "Secret", "moat-node-scan-tls").Object, "data")
	cert := func(k string) *x509.Certificate {
		raw, _ := base64.StdEncoding.DecodeString(data[k])
		b, _ := pem.Decode(raw)
		if b == nil {
			t.Fatalf("%s is not PEM", k)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert("ca.crt"))
	if _, err := cert("tls.crt").Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: time.Now()}); err != nil {
		t.Errorf("the node scanner's client certificate: %v", err)
	}
	serve := settings(t, objs, "serve.yaml")
	for _, want := range []string{"--node-report-ca=/etc/moat/node-scan-ca/ca.crt", "--node-report-addr=:8444", "--node-report-max-age=24h"} {
		if !hasPrefix(serve, want) {
			t.Errorf("the provider's settings lack %s: %v", want, serve)
		}
	}
	if got := volumeSources(objs, "secret", "secretName"); !strings.Contains(strings.Join(got, " "), "moat-node-scan-tls") {
		t.Errorf("the provider does not mount the node-scan CA: %v", got)
	}
	scan := settings(t, objs, "node-scan.yaml")
	for _, want := range []string{"--provider-url=https://moat.gatekeeper-system.svc:8444/v1/node-report", "--root=/host", "--provider-ca=/etc/moat/provider-ca/ca.crt"} {
		if !hasPrefix(scan, want) {
			t.Errorf("the node scanner's settings lack %s: %v", want, scan)
		}
	}
	svc, _ := yaml.Marshal(find(objs, "Service", "moat").Object)
	if !strings.Contains(string(svc), "port: 8444") {
		t.Errorf("the Service has no node-report port:\n%s", svc)
	}
	np, _ := yaml.Marshal(find(objs, "NetworkPolicy", "moat").Object)
	if !strings.Contains(string(np), "app.kubernetes.io/name: moat-node-scan") || !strings.Contains(string(np), "port: 8444") {
		t.Errorf("the NetworkPolicy does not let the node scanners in on 8444:\n%s", np)
	}

	// The Provider MoatNodeVulnerabilities asks trusts the same CA as the image Provider.
	images, _, _ := unstructured.NestedString(find(objs, "Provider", "moat").Object, "spec", "caBundle")
	nodes := find(objs, "Provider", "moat-nodes")
	url, _, _ := unstructured.NestedString(nodes.Object, "spec", "url")
	bundle, _, _ := unstructured.NestedString(nodes.Object, "spec", "caBundle")
	if url != "https://moat.gatekeeper-system.svc:8443/nodes" || bundle != images {
		t.Errorf("the nodes Provider: %s, same CA %v", url, bundle == images)
	}
	c := find(objs, "MoatNodeVulnerabilities", "moat-node-vulnerabilities")
	if c == nil {
		t.Fatal("no MoatNodeVulnerabilities constraint")
	}
	params, _, _ := unstructured.NestedMap(c.Object, "spec", "parameters")
	action, _, _ := unstructured.NestedString(c.Object, "spec", "enforcementAction")
	if params["provider"] != "moat-nodes" || params["reportPending"] != "reject" || action != "dryrun" {
		t.Errorf("the constraint: %s %v", action, params)
	}

	// The DaemonSet's pod: the host read-only, nothing else of the host's.
	spec, _, _ := unstructured.NestedMap(ds.Object, "spec", "template", "spec")
	js, _ := yaml.Marshal(spec)
	for _, want := range []string{"hostPath:\n    path: /\n", "mountPath: /host", "mountPropagation: None", "readOnlyRootFilesystem: true", "runAsNonRoot: true", "- ALL", "type: RuntimeDefault"} {
		if !strings.Contains(string(js), want) {
			t.Errorf("the node scanner's pod lacks %q:\n%s", want, js)
		}
	}
	mounts, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	for _, m := range mounts[0].(map[string]any)["volumeMounts"].([]any) {
		if mm := m.(map[string]any); mm["name"] == "host" && mm["readOnly"] != true {
			t.Errorf("the host's / is mounted writable: %v", mm)
		}
	}
	for _, never := range []string{"hostNetwork", "hostPID", "hostIPC", "privileged", "add:"} {
		if strings.Contains(string(js), never) {
			t.Errorf("the node scanner's pod has %s", never)
		}
	}
}

func TestNodeScanValuesAreChecked(t *testing.T) {
	for set, want := range map[string]string{
		"nodeScan.maxAge=0h":                         "/nodeScan/maxAge",
		"nodeScan.interval=forever":                  "/nodeScan/interval",
		"nodeScan.constraint.enforcementAction=deny": "enforcementAction",
		"nodeScan.nice=20":                           "nice",
	} {
		out, err := helmErr("template", "moat", "charts/moat", "--kube-version", "1.34.0", "--set", "nodeScan.enabled=true", "--set", set)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("%s: %v\n%s", set, err, out)
		}
	}
	out, err := helmErr("template", "moat", "charts/moat", "--kube-version", "1.34.0", "--set", "nodeScan.enabled=true",
		"--set", "sharedState.mode=none", "--set", "replicaCount=2")
	if err == nil || !strings.Contains(out, "needs sharedState") {
		t.Errorf("two replicas without a shared tier would each hold some nodes' reports: %v\n%s", err, out)
	}
}

// Judged as if it ran outside the release's namespace (which the chart exempts), the node scanner breaks Moat's
// hardening rules only where it reads the host (its read-only hostPath of /) and where it reads its own Node for
// the pool label (a token). Those are its one exemption, documented in docs/nodes.md; any other rule it broke
// would fail here.
func TestTheNodeScannerBreaksOnlyItsDocumentedRules(t *testing.T) {
	objs := render(t, "nodeScan.enabled=true", "policies.defender.enabled=true", "policies.podSecurity.level=restricted", "appArmorProfile=RuntimeDefault")
	c := pack.NewClient(t, true)
	pack.AddTemplates(t, c)
	for _, o := range objs {
		if strings.HasPrefix(o.GetAPIVersion(), "constraints.gatekeeper.sh/") && o.GetName() != "defender-allowed-images" && o.GetKind() != "MoatNodeVulnerabilities" {
			unstructured.RemoveNestedField(o.Object, "spec", "match", "excludedNamespaces")
			if _, err := c.AddConstraint(context.Background(), o); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmpl, _, _ := unstructured.NestedMap(find(objs, "DaemonSet", "moat-node-scan").Object, "spec", "template")
	pod := &unstructured.Unstructured{Object: tmpl}
	pod.SetAPIVersion("v1")
	pod.SetKind("Pod")
	pod.SetName("moat-node-scan")
	pod.SetNamespace("apps")
	resp, err := c.Review(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{
		"pss-volume-types":         "host (hostPath)",
		"defender-host-paths":      "node-scan (/)",
		"defender-automount-token": "automountServiceAccountToken",
	}
	broken := map[string]bool{}
	for _, r := range resp.Results() {
		name := r.Constraint.GetName()
		broken[name] = true
		if want, ok := documented[name]; !ok || !strings.Contains(r.Msg, want) {
			t.Errorf("%s: %s: the node scanner breaks a rule its exemption does not document", name, r.Msg)
		}
	}
	for name := range documented {
		if !broken[name] {
			t.Errorf("%s no longer judges the node scanner's pod: update its documented exemption", name)
		}
	}
}
