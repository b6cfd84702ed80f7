package registry_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/grypescan"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/resolve"
	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
	"github.com/moat-dev/moat/provider/internal/vulndb"
	"github.com/moat-dev/moat/provider/testenv"
)

// Every kind of fetch goes through the registry client: each refuses a
// plain-HTTP registry the operator did not list, and each is counted under
// its purpose when the registry is listed.
func TestEveryFetchRefusesUnlistedPlainHTTPAndIsCounted(t *testing.T) {
	served, host, ref, key := signedSample(t, "app:v1")
	key.Attest(t, ref, "vuln", testenv.VulnPredicate("https://github.com/anchore/grype", `{"matches":[]}`, time.Now()))
	db := sampleDB(t)
	fetches := func(c *registry.Client, m *metrics.Metrics) map[string]error {
		return fetchEach(t, c, m, host+"/app:v1", ref, key, db, true)
	}

	before := served.Requests()
	m := metrics.New()
	unlisted, err := registry.New(registry.Options{PerHostConcurrency: 4}, m)
	if err != nil {
		t.Fatal(err)
	}
	for purpose, err := range fetches(unlisted, m) {
		if err == nil || !strings.Contains(err.Error(), "--insecure-registries") {
			t.Errorf("%s from an unlisted plain-HTTP registry: %v, want a refusal naming --insecure-registries", purpose, err)
		}
	}
	// go-containerregistry tries HTTPS first (counted, failing the
	// handshake), then plain HTTP, which the transport refuses: nothing
	// reaches the registry.
	if n := served.Requests() - before; n != 0 {
		t.Errorf("%d plain-HTTP requests reached the unlisted registry", n)
	}

	m = metrics.New()
	listed, err := registry.New(registry.Options{PerHostConcurrency: 4, InsecureRegistries: []string{host}}, m)
	if err != nil {
		t.Fatal(err)
	}
	for purpose, err := range fetches(listed, m) {
		if err != nil {
			t.Errorf("%s from a listed registry: %v", purpose, err)
		}
		n := 0.0
		for _, method := range []string{"GET", "HEAD"} {
			n += testutil.ToFloat64(m.RegistryRequests.WithLabelValues(host, method, purpose))
		}
		if n == 0 {
			t.Errorf("%s: no request counted under moat_registry_requests_total{purpose=%q}", purpose, purpose)
		}
	}
}

// Every kind of fetch authenticates the way real registries ask: a bearer
// challenge and a token endpoint taking the user's password. Without
// credentials each fails, the resolution with an error that says what to
// configure; with a docker config file each succeeds.
func TestEveryFetchAuthenticatesWithBearerTokens(t *testing.T) {
	served, host, ref, key := signedSample(t, "private/app:v1")
	auth := &devregistry.TokenAuth{Users: map[string]string{"team": "s3cret"}}
	served.SetTokenAuth(auth)
	db := sampleDB(t)
	fetches := func(c *registry.Client) map[string]error {
		return fetchEach(t, c, metrics.New(), host+"/private/app:v1", ref, key, db, false)
	}

	anonymous, err := registry.New(registry.Options{PerHostConcurrency: 4, InsecureRegistries: []string{host}}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	for purpose, err := range fetches(anonymous) {
		if err == nil {
			t.Errorf("%s without credentials succeeded", purpose)
		}
	}
	if err := fetches(anonymous)[registry.Resolve]; err == nil || !strings.Contains(err.Error(), "refused access (HTTP 401)") || !strings.Contains(err.Error(), "docs/registries.md") {
		t.Errorf("resolution without credentials: %v, want a refusal that says what to configure", err)
	}

	config := filepath.Join(t.TempDir(), "config.json")
	body := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte("team:s3cret")))
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	withFile, err := registry.New(registry.Options{PerHostConcurrency: 4, InsecureRegistries: []string{host}, RegistryConfig: config}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	for purpose, err := range fetches(withFile) {
		if err != nil {
			t.Errorf("%s with the right credentials: %v", purpose, err)
		}
	}
	if auth.Authenticated("team") == 0 {
		t.Error("no request reached the registry with the user's token")
	}
}

// signedSample serves the "high" sample at repoTag on a new registry,
// signed with a new key.
func signedSample(t *testing.T, repoTag string) (*devregistry.Registry, string, name.Digest, *testenv.Signer) {
	t.Helper()
	served := devregistry.New()
	srv := httptest.NewServer(served)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := samples.Image(samples.Images["high"])
	if err != nil {
		t.Fatal(err)
	}
	ref, err := devregistry.Write(context.Background(), host+"/"+repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	key := testenv.NewKeySigner(t)
	key.Sign(t, ref)
	return served, host, ref, key
}

// sampleDB is the sample vulnerability database, loaded.
func sampleDB(t *testing.T) *vulndb.DB {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "vulnerability.db")
	if err := samples.WriteDB(dbPath); err != nil {
		t.Fatal(err)
	}
	db, err := vulndb.New(vulndb.Options{Dir: filepath.Join(t.TempDir(), "db")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Load(dbPath); err != nil {
		t.Fatal(err)
	}
	return db
}

// fetchEach runs one fetch of each purpose for ref (tagged when resolved) through c (the
// attestation one when attest) and returns the error of each.
func fetchEach(t *testing.T, c *registry.Client, m *metrics.Metrics, tagged string, ref name.Digest, key *testenv.Signer, db *vulndb.DB, attest bool) map[string]error {
	t.Helper()
	ctx := context.Background()
	out := map[string]error{}
	r, err := reference.Parse(tagged)
	if err != nil {
		t.Fatal(err)
	}
	_, out[registry.Resolve] = resolve.New(resolve.Options{}, c, m).Resolve(ctx, r)
	e, err := grypescan.New(grypescan.Options{Registry: c}, db)
	if err != nil {
		t.Fatal(err)
	}
	_, out[registry.Scan] = e.Scan(ctx, ref.String())
	v, err := sigcheck.New(sigcheck.Options{Trust: sigcheck.Trust{KeyFiles: []string{key.PubFile}, IgnoreTlog: true}, Registry: c})
	if err != nil {
		t.Fatal(err)
	}
	if s := v.Verify(ctx, ref.String()); !s.Verified {
		out[registry.Signature] = &sigError{s.Reason}
	}
	if attest {
		_, out[registry.Attestation] = v.Attestations(ctx, ref.String())
	}
	return out
}

type sigError struct{ reason string }

func (e *sigError) Error() string { return e.reason }
