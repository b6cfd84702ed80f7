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

func hasPrefix(args []string, p string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, p) })
}

func TestScannerModes(t *testing.T) {
	off := render(t)
	if a := args(t, off); !slices.Contains(a, "--scanner=off") || hasPrefix(a, "--scan-") || find(off, "Deployment", "moat-scanner") != nil {
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
	for _, want := range []string{"--scanner=service", "--scanner-url=https://moat-scanner.gatekeeper-system.svc:8443", "--scan-max=critical=0"} {
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
	sa := settings(t, svc, "scanner.yaml")
	for _, want := range []string{"--db-url=https://grype.anchore.io/databases", "--insecure-registries=registry.local:5000", "--client-ca=/etc/moat/tls/ca.crt"} {
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

func TestSignatureValues(t *testing.T) {
	if a := args(t, render(t)); hasPrefix(a, "--signature") {
		t.Errorf("signatures off by default: %v", a)
	}
	objs := render(t, "signatures.enabled=true", "signatures.secret=cosign-trust", "signatures.keys={release.pub,legacy.pub}",
		"signatures.identities[0].issuer=https://token.actions.githubusercontent.com",
		"signatures.identities[0].subjectRegExp=^https://github.com/acme/.*$",
		"signatures.fulcioRoots=fulcio.pem", "signatures.rekorKey=rekor.pub", "signatures.attestations=true", "scanner.mode=service")
	a := args(t, objs)
	for _, want := range []string{
		"--signature-keys=/etc/moat/signatures/release.pub,/etc/moat/signatures/legacy.pub",
		"--signature-identity=issuer=https://token.actions.githubusercontent.com,subject-regexp=^https://github.com/acme/.*$",
		"--signature-fulcio-roots=/etc/moat/signatures/fulcio.pem", "--signature-rekor-key=/etc/moat/signatures/rekor.pub",
		"--scan-attestations", "--scanner=service",
	} {
		if !slices.Contains(a, want) {
			t.Errorf("no %s in %v", want, a)
		}
	}
	if slices.Contains(a, "--signature-ignore-tlog") {
		t.Error("transparency-log checks turned off without being asked")
	}
	if !slices.Contains(volumeSources(objs, "secret", "secretName"), "cosign-trust") {
		t.Error("the trust secret is not mounted")
	}
}

// A signature configuration that cannot work is refused at install with
// what to set.
func TestSignatureValuesRefuseIncompleteTrust(t *testing.T) {
	cases := []struct {
		sets []string
		says string
	}{
		{[]string{"signatures.keys={a.pub}"}, "ignoreTlog: true"},
		{[]string{"signatures.ignoreTlog=true"}, "needs signatures.keys or signatures.identities"},
		{[]string{"signatures.ignoreTlog=true", "signatures.identities[0].issuer=https://x", "signatures.identities[0].subject=ci@example.com"}, "need signatures.fulcioRoots"},
		{[]string{"signatures.ignoreTlog=true", "signatures.identities[0].subject=ci@example.com", "signatures.fulcioRoots=f.pem"}, "missing property 'issuer'"},
	}
	for _, c := range cases {
		args := []string{"template", "moat", "charts/moat", "--kube-version", "1.34.0", "--set", "signatures.enabled=true", "--set", "signatures.secret=s"}
		for _, s := range c.sets {
			args = append(args, "--set", s)
		}
		out, err := helmErr(args...)
		if err == nil || !strings.Contains(out, c.says) {
			t.Errorf("%v: %v\n%s", c.sets, err, out)
		}
	}
}

func TestCertManagerIssuesTheServingCertificate(t *testing.T) {
	objs := render(t, "certificates.certManager.enabled=true")
	if find(objs, "Secret", "moat-tls") != nil {
		t.Error("the chart renders moat-tls although cert-manager writes it")
	}
	c := find(objs, "Certificate", "moat")
	if c == nil {
		t.Fatal("no Certificate")
	}
	secret, _, _ := unstructured.NestedString(c.Object, "spec", "secretName")
	dns, _, _ := unstructured.NestedStringSlice(c.Object, "spec", "dnsNames")
	issuer, _, _ := unstructured.NestedString(c.Object, "spec", "issuerRef", "name")
	if secret != "moat-tls" || !slices.Contains(dns, "moat.gatekeeper-system.svc") || issuer != "moat-ca" {
		t.Errorf("Certificate: secret %q, dnsNames %v, issuer %q", secret, dns, issuer)
	}
	if find(objs, "Issuer", "moat-ca") == nil {
		t.Error("no CA Issuer")
	}
	ca, _, _ := unstructured.NestedString(find(objs, "Secret", "moat-ca").Object, "data", "tls.crt")
	for _, p := range []string{"moat", "moat-mutate"} {
		if b, _, _ := unstructured.NestedString(find(objs, "Provider", p).Object, "spec", "caBundle"); b == "" || b != ca {
			t.Errorf("Provider %s caBundle is not the CA cert-manager issues from", p)
		}
	}

	own := render(t, "certificates.certManager.enabled=true", "certificates.certManager.issuerRef.name=corp-ca",
		"certificates.certManager.issuerRef.kind=ClusterIssuer", "certificates.certManager.caBundle=Q09SUA==")
	if find(own, "Issuer", "moat-ca") != nil || find(own, "Secret", "moat-ca") != nil {
		t.Error("an issuerRef of the user's still renders the chart's CA")
	}
	kind, _, _ := unstructured.NestedString(find(own, "Certificate", "moat").Object, "spec", "issuerRef", "kind")
	b, _, _ := unstructured.NestedString(find(own, "Provider", "moat").Object, "spec", "caBundle")
	if kind != "ClusterIssuer" || b != "Q09SUA==" {
		t.Errorf("issuerRef kind %q, caBundle %q", kind, b)
	}
	if out, err := helmErr("template", "moat", "charts/moat", "--kube-version", "1.34.0", "--set", "certificates.certManager.enabled=true",
		"--set", "certificates.certManager.issuerRef.name=corp-ca"); err == nil || !strings.Contains(out, "cainjector does not inject Provider objects") {
		t.Errorf("issuerRef without caBundle: %v\n%s", err, out)
	}
}

func TestServiceMonitorsSelectTheirServices(t *testing.T) {
	objs := render(t, "serviceMonitor.enabled=true", "serviceMonitor.labels.release=prometheus", "scanner.mode=service")
	for _, name := range []string{"moat", "moat-scanner"} {
		sm := find(objs, "ServiceMonitor", name)
		if sm == nil {
			t.Fatalf("no ServiceMonitor %s", name)
		}
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		labels := find(objs, "Service", name).GetLabels()
		if !selects(sel, labels) {
			t.Errorf("ServiceMonitor %s selects %v; Service labels %v", name, sel, labels)
		}
		if sm.GetLabels()["release"] != "prometheus" {
			t.Errorf("ServiceMonitor %s lacks the configured labels", name)
		}
	}
	if n := count(render(t), "ServiceMonitor"); n != 0 {
		t.Errorf("%d ServiceMonitors by default", n)
	}
}
