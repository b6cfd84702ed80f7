package chart_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func containerArgs(t *testing.T, d *unstructured.Unstructured) []string {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	a, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	return a
}

func hasPrefix(args []string, p string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, p) })
}

func TestScannerModes(t *testing.T) {
	off := render(t)
	if a := args(t, off); hasPrefix(a, "--scanner") || find(off, "Deployment", "moat-scanner") != nil {
		t.Errorf("scanner.mode off still scans: %v", a)
	}

	emb := render(t, "scanner.mode=embedded", "scanner.policy.max.high=5", "scanner.policy.ignoreIDs={CVE-1,CVE-2}")
	a := args(t, emb)
	for _, want := range []string{"--scanner=embedded", "--db-dir=/var/lib/moat/vulndb", "--db-url=https://grype.anchore.io/databases",
		"--scan-max=critical=0,high=5", "--scan-ignore-ids=CVE-1,CVE-2", "--db-max-age=120h"} {
		if !slices.Contains(a, want) {
			t.Errorf("embedded: no %s in %v", want, a)
		}
	}
	if find(emb, "Deployment", "moat-scanner") != nil {
		t.Error("embedded renders a scanner Deployment")
	}

	svc := render(t, "scanner.mode=service", "provider.insecureRegistries={registry.local:5000}")
	a = args(t, svc)
	for _, want := range []string{"--scanner=remote", "--scanner-url=https://moat-scanner.gatekeeper-system.svc:8443", "--scan-max=critical=0"} {
		if !slices.Contains(a, want) {
			t.Errorf("service: no %s in provider args %v", want, a)
		}
	}
	if hasPrefix(a, "--db-") {
		t.Errorf("service: the provider gets database flags: %v", a)
	}
	sd := find(svc, "Deployment", "moat-scanner")
	if sd == nil {
		t.Fatal("service: no scanner Deployment")
	}
	sa := containerArgs(t, sd)
	for _, want := range []string{"scanner", "--db-url=https://grype.anchore.io/databases", "--insecure-registries=registry.local:5000", "--client-ca=/etc/moat/tls/ca.crt"} {
		if !slices.Contains(sa, want) {
			t.Errorf("scanner args lack %s: %v", want, sa)
		}
	}
	// Each Service selects its own pods only.
	provSel, _, _ := unstructured.NestedStringMap(find(svc, "Service", "moat").Object, "spec", "selector")
	scanSel, _, _ := unstructured.NestedStringMap(find(svc, "Service", "moat-scanner").Object, "spec", "selector")
	scanPods, _, _ := unstructured.NestedStringMap(sd.Object, "spec", "template", "metadata", "labels")
	provPods, _, _ := unstructured.NestedStringMap(find(svc, "Deployment", "moat").Object, "spec", "template", "metadata", "labels")
	if selects(provSel, scanPods) || selects(scanSel, provPods) || !selects(scanSel, scanPods) || !selects(provSel, provPods) {
		t.Errorf("selectors cross: provider %v / scanner %v", provSel, scanSel)
	}
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestScannerCertificatesChainForBothSides(t *testing.T) {
	objs := render(t, "scanner.mode=service")
	s := find(objs, "Secret", "moat-scanner-tls")
	if s == nil {
		t.Fatal("no moat-scanner-tls")
	}
	data, _, _ := unstructured.NestedStringMap(s.Object, "data")
	cert := func(k string) *x509.Certificate {
		raw, err := base64.StdEncoding.DecodeString(data[k])
		if err != nil {
			t.Fatal(err)
		}
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
	if _, err := cert("tls.crt").Verify(x509.VerifyOptions{Roots: roots, DNSName: "moat-scanner.gatekeeper-system.svc",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, CurrentTime: time.Now()}); err != nil {
		t.Errorf("the scanner's serving certificate: %v", err)
	}
	if _, err := cert("client.crt").Verify(x509.VerifyOptions{Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: time.Now()}); err != nil {
		t.Errorf("the provider's client certificate for the scanner: %v", err)
	}
}
