package vex_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
	"github.com/moat-dev/moat/provider/internal/vex"
	"github.com/moat-dev/moat/provider/testenv"
)

// document is an OpenVEX document with one statement: vuln has status in
// product (and, when given, only in its subcomponent).
func document(vuln, product, sub, status string) string {
	subs := ""
	if sub != "" {
		subs = fmt.Sprintf(`,"subcomponents":[{"@id":%q}]`, sub)
	}
	just := ""
	if status == "not_affected" {
		just = `,"justification":"vulnerable_code_not_in_execute_path","impact_statement":"the parser is never called"`
	}
	return fmt.Sprintf(`{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","author":"Platform team",`+
		`"timestamp":"2026-11-30T10:00:00Z","version":1,"statements":[{"vulnerability":{"name":%q},"products":[{"@id":%q%s}],"status":%q%s}]}`,
		vuln, product, subs, status, just)
}

var findings = []answer.Finding{
	{ID: "CVE-2026-1", Severity: "critical", Package: "openssl", Installed: "3.0.1", PURL: "pkg:deb/debian/openssl@3.0.1"},
	{ID: "CVE-2026-2", Severity: "high", Package: "zlib", Installed: "1.2", PURL: "pkg:deb/debian/zlib@1.2"},
	{ID: "CVE-2026-3", Severity: "high", Package: "curl", Installed: "8.0"},
}

const image = "reg.example.com/team/app@sha256:1111111111111111111111111111111111111111111111111111111111111111"

func ids(fs []answer.Finding) string {
	var out []string
	for _, f := range fs {
		out = append(out, f.ID)
	}
	return strings.Join(out, ",")
}

func load(t *testing.T, docs ...string) *vex.Source {
	t.Helper()
	dir := t.TempDir()
	for i, d := range docs {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("doc-%d.json", i)), []byte(d), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := vex.Load(vex.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAStatementTakesOutExactlyItsAdvisoryInExactlyItsProduct(t *testing.T) {
	purl := "pkg:oci/app@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	other := "pkg:oci/app@sha256:2222222222222222222222222222222222222222222222222222222222222222"
	cases := []struct {
		name, doc, out string
	}{
		{"not_affected by purl", document("CVE-2026-1", purl, "", "not_affected"), "CVE-2026-1"},
		{"fixed by digest reference", document("CVE-2026-2", image, "", "fixed"), "CVE-2026-2"},
		{"by purl with the repository", document("CVE-2026-1", purl+"?repository_url=reg.example.com/team/app", "", "not_affected"), "CVE-2026-1"},
		{"another repository", document("CVE-2026-1", purl+"?repository_url=reg.example.com/other/app", "", "not_affected"), ""},
		{"another digest", document("CVE-2026-1", other, "", "not_affected"), ""},
		{"affected does not take out", document("CVE-2026-1", purl, "", "affected"), ""},
		{"under investigation does not take out", document("CVE-2026-1", purl, "", "under_investigation"), ""},
		{"its subcomponent", document("CVE-2026-1", purl, "pkg:deb/debian/openssl@3.0.1", "not_affected"), "CVE-2026-1"},
		{"another subcomponent", document("CVE-2026-2", purl, "pkg:deb/debian/openssl@3.0.1", "not_affected"), ""},
		// A finding without a package URL is never taken out by a
		// statement limited to subcomponents.
		{"no purl, a subcomponent statement", document("CVE-2026-3", purl, "pkg:deb/debian/curl@8.0", "not_affected"), ""},
		{"no purl, a product statement", document("CVE-2026-3", purl, "", "not_affected"), "CVE-2026-3"},
	}
	for _, c := range cases {
		kept, out, err := load(t, c.doc).Apply(context.Background(), image, findings)
		if err != nil || ids(out) != c.out || len(kept)+len(out) != len(findings) {
			t.Errorf("%s: taken out %q, kept %q, %v; want %q taken out", c.name, ids(out), ids(kept), err, c.out)
		}
	}
	_, out, _ := load(t, document("CVE-2026-1", purl, "", "not_affected")).Apply(context.Background(), image, findings)
	if v := out[0].VEX; v == nil || v.Status != "not_affected" || v.Justification != "vulnerable_code_not_in_execute_path" ||
		v.Impact != "the parser is never called" || v.Source != "file doc-0.json" {
		t.Errorf("the statement kept in the answer: %+v", v)
	}
}

// The newest statement decides: a later "affected" undoes a
// "not_affected".
func TestTheNewestStatementWins(t *testing.T) {
	purl := "pkg:oci/app@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	older := document("CVE-2026-1", purl, "", "not_affected")
	newer := strings.Replace(document("CVE-2026-1", purl, "", "affected"), "2026-11-30T10:00:00Z", "2026-12-01T10:00:00Z", 1)
	if _, out, _ := load(t, older, newer).Apply(context.Background(), image, findings); len(out) != 0 {
		t.Errorf("an older not_affected won over a newer affected: %+v", out)
	}
}

func TestADocumentMoatCannotReadStopsTheStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "typo.json"), []byte(`{"statements": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := vex.Load(vex.Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "typo.json") {
		t.Errorf("a broken document: %v; want an error naming it", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "typo.json"), []byte(`{"@context":"https://example.com/other","statements":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := vex.Load(vex.Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "@context") {
		t.Errorf("not OpenVEX: %v", err)
	}
	// A mounted ConfigMap's bookkeeping is skipped.
	clean := t.TempDir()
	if err := os.Mkdir(filepath.Join(clean, "..2026_12_01"), 0o700); err != nil {
		t.Fatal(err)
	}
	if s, err := vex.Load(vex.Options{Dir: clean}); err != nil || s.Files() != 0 {
		t.Errorf("an empty ConfigMap mount: %v", err)
	}
}

// An OpenVEX attestation signed by a trusted key takes its finding out;
// one signed by an untrusted key is ignored, and the finding counts.
func TestAttestedStatementsOnlyUnderTheSignatureTrust(t *testing.T) {
	trusted, untrusted := testenv.NewKeySigner(t), testenv.NewKeySigner(t)
	host := testenv.StartRegistry(t)
	v, err := sigcheck.New(sigcheck.Options{Trust: sigcheck.Trust{KeyFiles: []string{trusted.PubFile}, IgnoreTlog: true}, Registry: testenv.RegistryClient(t, host)})
	if err != nil {
		t.Fatal(err)
	}
	src, err := vex.Load(vex.Options{Attestations: v})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		signer *testenv.Signer
		repo   string
		out    string
	}{{trusted, "app/trusted:v1", "CVE-2026-1"}, {untrusted, "app/untrusted:v1", ""}} {
		ref := testenv.PushRandom(t, host, c.repo)
		image := ref.Context().Name() + "@" + ref.DigestStr()
		purl := "pkg:oci/" + ref.Context().RepositoryStr()[strings.LastIndex(ref.Context().RepositoryStr(), "/")+1:] + "@" + ref.DigestStr()
		c.signer.Attest(t, ref, "openvex", []byte(document("CVE-2026-1", purl, "", "not_affected")))
		_, out, err := src.Apply(context.Background(), image, findings)
		if ids(out) != c.out {
			t.Errorf("%s: taken out %q (%v); want %q", c.repo, ids(out), err, c.out)
		}
		if c.out != "" && (err != nil || !strings.HasPrefix(out[0].VEX.Source, "attestation signed by")) {
			t.Errorf("%s: %+v %v", c.repo, out[0].VEX, err)
		}
		if c.out == "" && (err == nil || !strings.Contains(err.Error(), "no attestation verifies")) {
			t.Errorf("%s: the untrusted attestation should be reported as not used, got %v", c.repo, err)
		}
	}
}

// A directory whose documents change is read again: a new statement
// applies and the version changes (reports are judged again); a document
// that breaks leaves the statements in use.
func TestChangedDocumentsAreReadAgain(t *testing.T) {
	dir := t.TempDir()
	purl := "pkg:oci/app@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "platform.json"), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(document("CVE-2026-1", purl, "", "affected"))
	s, err := vex.Load(vex.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Watch(ctx, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
	defer func() { cancel(); <-done }()
	first := s.Version()
	takenOut := func() string {
		_, out, _ := s.Apply(context.Background(), image, findings)
		return ids(out)
	}
	if got := takenOut(); got != "" {
		t.Fatalf("affected: %q taken out", got)
	}

	write(document("CVE-2026-1", purl, "", "not_affected"))
	for deadline := time.Now().Add(10 * time.Second); takenOut() != "CVE-2026-1"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the changed document was never read")
		}
	}
	second := s.Version()
	if second == first {
		t.Error("the version did not change with the statements")
	}

	write(`{"statements": [`)
	time.Sleep(100 * time.Millisecond)
	if takenOut() != "CVE-2026-1" || s.Version() != second {
		t.Error("a broken document replaced the statements in use")
	}
}
