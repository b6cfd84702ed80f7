package attest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/attest"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
	"github.com/moat-dev/moat/provider/testenv"
)

const (
	grypeCritical = `{"matches":[{"vulnerability":{"id":"CVE-2026-1111","severity":"Critical","fix":{"versions":["1.2.4"],"state":"fixed"}},"artifact":{"name":"openssl","version":"1.2.3","purl":"pkg:deb/debian/openssl@1.2.3"}},` +
		`{"vulnerability":{"id":"CVE-2026-2222","severity":"Low","fix":{"versions":[],"state":"not-fixed"}},"artifact":{"name":"zlib","version":"1.3"}}]}`
	trivyClean = `{"SchemaVersion":2,"Results":[{"Target":"app","Vulnerabilities":[]}]}`
	trivyHigh  = `{"SchemaVersion":2,"Results":[{"Target":"app","Vulnerabilities":[{"VulnerabilityID":"CVE-2026-3333","PkgName":"lodash","InstalledVersion":"4.17.0","FixedVersion":"4.17.21","Severity":"HIGH"}]}]}`
)

func setup(t *testing.T) (host string, key *testenv.Signer, src *attest.Source) {
	t.Helper()
	key = testenv.NewKeySigner(t)
	host = testenv.StartRegistry(t)
	v, err := sigcheck.New(sigcheck.Options{Trust: sigcheck.Trust{KeyFiles: []string{key.PubFile}, IgnoreTlog: true}, Registry: testenv.RegistryClient(t, host)})
	if err != nil {
		t.Fatal(err)
	}
	return host, key, &attest.Source{Verifier: v}
}

func judge(t *testing.T, src *attest.Source, ref name.Digest) (answer.Scan, error) {
	t.Helper()
	res, err := src.Scan(context.Background(), ref.String())
	if err != nil {
		return answer.Scan{}, err
	}
	return scan.DefaultPolicy().Judge(res, time.Now()), nil
}

func TestAttestedReportsDecideByTheScanPolicy(t *testing.T) {
	host, key, src := setup(t)
	now := time.Now()

	crit := testenv.PushRandom(t, host, "app/critical:v1")
	key.Attest(t, crit, "vuln", testenv.VulnPredicate("https://github.com/anchore/grype", grypeCritical, now))
	r, err := judge(t, src, crit)
	if err != nil || r.Status != answer.Rejected || *r.Vulnerabilities != (answer.Counts{Critical: 1, Low: 1}) || *r.Fixable != (answer.Counts{Critical: 1}) {
		t.Errorf("Grype report with a critical finding: %+v %v", r, err)
	}
	if r.Scanner == nil || !strings.Contains(r.Scanner.Name, "grype") || len(r.Findings) != 2 || r.Findings[0].Fixed != "1.2.4" || r.Findings[0].Package != "openssl" {
		t.Errorf("scanner and findings: %+v %+v", r.Scanner, r.Findings)
	}

	// The report's package URLs reach the provider (VEX statements match
	// subcomponents by them); answers leave them out.
	if res, err := src.Scan(context.Background(), crit.String()); err != nil || res.Findings[0].PURL != "pkg:deb/debian/openssl@1.2.3" {
		t.Errorf("package URL of the attested finding: %+v %v", res.Findings, err)
	}

	clean := testenv.PushRandom(t, host, "app/clean:v1")
	key.Attest(t, clean, "vuln", testenv.VulnPredicate("https://github.com/aquasecurity/trivy", trivyClean, now))
	if r, err := judge(t, src, clean); err != nil || r.Status != answer.Accepted || *r.Vulnerabilities != (answer.Counts{}) {
		t.Errorf("Trivy report with no findings: %+v %v", r, err)
	}

	// The newest attestation wins.
	twice := testenv.PushRandom(t, host, "app/rescanned:v1")
	key.Attest(t, twice, "vuln", testenv.VulnPredicate("https://github.com/aquasecurity/trivy", trivyHigh, now.Add(-time.Hour)))
	key.Attest(t, twice, "vuln", testenv.VulnPredicate("https://github.com/aquasecurity/trivy", trivyClean, now))
	if r, err := judge(t, src, twice); err != nil || r.Status != answer.Accepted || r.Vulnerabilities.High != 0 {
		t.Errorf("two attestations, the newer clean: %+v %v", r, err)
	}
}

func TestMissingBadAndUntrustedAttestations(t *testing.T) {
	host, key, src := setup(t)
	now := time.Now()

	none := testenv.PushRandom(t, host, "app/none:v1")
	if _, err := judge(t, src, none); !errors.Is(err, scan.ErrNoReport) || !strings.Contains(err.Error(), "no vulnerability attestation") {
		t.Errorf("no attestation: %v; want report_not_available", err)
	}

	other := testenv.PushRandom(t, host, "app/other:v1")
	key.Attest(t, other, "custom", []byte(`{"built":"by CI"}`))
	if _, err := judge(t, src, other); !errors.Is(err, scan.ErrNoReport) || !strings.Contains(err.Error(), "other predicate types") {
		t.Errorf("only another predicate type: %v", err)
	}

	bad := testenv.PushRandom(t, host, "app/bad:v1")
	key.Attest(t, bad, "vuln", testenv.VulnPredicate("https://github.com/anchore/grype", `"not a report"`, now))
	if _, err := judge(t, src, bad); err == nil || errors.Is(err, scan.ErrNoReport) || scan.KindOf(err) != "attestation" {
		t.Errorf("unreadable report: %v; want scan_failed", err)
	}

	untrusted := testenv.PushRandom(t, host, "app/untrusted:v1")
	testenv.NewKeySigner(t).Attest(t, untrusted, "vuln", testenv.VulnPredicate("https://github.com/anchore/grype", trivyClean, now))
	if _, err := judge(t, src, untrusted); err == nil || !strings.Contains(err.Error(), "no attestation verifies") {
		t.Errorf("attested by an untrusted key: %v; want scan_failed", err)
	}
}
