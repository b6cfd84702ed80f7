package credentials_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/resolve"
)

// private is a registry that asks for bearer tokens, with one image.
type private struct {
	host string
	auth *devregistry.TokenAuth
	ref  string
}

func startPrivate(t *testing.T, auth *devregistry.TokenAuth) private {
	t.Helper()
	reg := devregistry.New()
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/team/app:v1"
	if _, err := devregistry.Push(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	reg.SetTokenAuth(auth)
	return private{host: host, auth: auth, ref: ref}
}

// clean leaves no platform setting of the machine in the way.
func clean(t *testing.T) {
	for _, k := range []string{"AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_PROFILE", "AWS_EC2_METADATA_DISABLED", "AWS_CA_BUNDLE", "AWS_REGION", "AWS_DEFAULT_REGION", "GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func file(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// azureWorkload sets the environment AKS workload identity injects.
func azureWorkload(t *testing.T) {
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", file(t, "federated-token"))
	t.Setenv("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111")
	t.Setenv("AZURE_TENANT_ID", "22222222-2222-2222-2222-222222222222")
}

// irsa sets the environment EKS injects for IAM roles for service accounts.
func irsa(t *testing.T) {
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", file(t, "irsa-token"))
	t.Setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/moat")
	t.Setenv("AWS_REGION", "eu-west-1")
}

func newClient(t *testing.T, c *cloud, plain string, ids credentials.Options) *registry.Client {
	t.Helper()
	ids.Identity = c.client()
	rc, err := registry.New(registry.Options{PerHostConcurrency: 8, InsecureRegistries: []string{plain}, Credentials: ids}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// pull resolves ref's digest and fetches its layers, as resolution and a
// scan do, each time with a new registry session (so the keychain is asked
// every time).
func pull(t *testing.T, rc *registry.Client, ref string, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := reference.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolve.New(resolve.Options{}, rc, metrics.New()).Resolve(ctx, r); err != nil {
		return err
	}
	nref, _ := rc.Reference(ref)
	img, err := remote.Image(nref, rc.Options(ctx, registry.Scan)...)
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rd, err := l.Compressed()
		if err != nil {
			return err
		}
		rd.Close()
	}
	return nil
}

func TestAzureWorkloadIdentityThroughACRsExchange(t *testing.T) {
	clean(t)
	azureWorkload(t)
	c := newCloud(t)
	reg := startPrivate(t, &devregistry.TokenAuth{RefreshLifetime: 3 * time.Hour,
		Exchange: func(tok string) (string, bool) { return "entra", tok == "entra-workload" }})
	rc := newClient(t, c, reg.host, credentials.Options{Azure: credentials.Auto, AzureHosts: []string{reg.host}})
	for range 3 {
		if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
			t.Fatalf("%v (identity calls: %v)", err, c.calls)
		}
	}
	if reg.auth.Authenticated("entra") == 0 {
		t.Fatal("no registry request was made with the exchanged token")
	}
	if n := reg.auth.Exchanges(); n != 1 {
		t.Errorf("%d ACR exchanges for 3 pulls; the refresh token must be reused until near its end", n)
	}
	if n := c.count("login.microsoftonline.com/22222222-2222-2222-2222-222222222222/oauth2/v2.0/token"); n != 1 {
		t.Errorf("%d Entra ID token requests for 3 pulls, want 1", n)
	}
}

func TestAzureManagedIdentity(t *testing.T) {
	clean(t)
	c := newCloud(t)
	reg := startPrivate(t, &devregistry.TokenAuth{RefreshLifetime: 3 * time.Hour,
		Exchange: func(tok string) (string, bool) { return "managed", tok == "entra-managed" }})
	// auto finds no workload identity, and managed identity is never
	// guessed: auto stays off.
	rc := newClient(t, c, reg.host, credentials.Options{Azure: credentials.Auto, AzureHosts: []string{reg.host}})
	if err := pull(t, rc, reg.ref, 5*time.Second); err == nil {
		t.Fatal("auto without workload identity pulled a private image")
	}
	if c.total() != 0 {
		t.Errorf("auto without workload identity called an identity endpoint: %v", c.calls)
	}
	rc = newClient(t, c, reg.host, credentials.Options{Azure: credentials.On, AzureHosts: []string{reg.host}})
	if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Only the instance metadata stand-in issues the token the registry
	// takes for "managed" (the SDK keeps managed identity tokens in a
	// process-wide cache, so a second run may not call it again).
	if reg.auth.Authenticated("managed") == 0 {
		t.Errorf("the managed identity was not used: %v", c.calls)
	}
}

func TestECRThroughIRSA(t *testing.T) {
	clean(t)
	irsa(t)
	c := newCloud(t)
	reg := startPrivate(t, &devregistry.TokenAuth{Users: map[string]string{"AWS": c.ecrPassword}})
	rc := newClient(t, c, reg.host, credentials.Options{AWS: credentials.Auto, AWSHosts: []string{reg.host}})
	for range 3 {
		if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if reg.auth.Authenticated("AWS") == 0 {
		t.Fatal("no registry request was made with the ECR token")
	}
	if n := c.count("api.ecr.eu-west-1.amazonaws.com/#AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"); n != 1 {
		t.Errorf("%d GetAuthorizationToken calls for 3 pulls, want 1: %v", n, c.calls)
	}
	if c.count("sts.eu-west-1.amazonaws.com/") != 1 {
		t.Errorf("STS was not asked once for the web identity: %v", c.calls)
	}
}

func TestGoogleThroughTheMetadataServer(t *testing.T) {
	clean(t)
	c := newCloud(t)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(c.metadata.URL, "http://"))
	reg := startPrivate(t, &devregistry.TokenAuth{Users: map[string]string{"oauth2accesstoken": c.googleToken}})
	rc := newClient(t, c, reg.host, credentials.Options{GCP: credentials.On, GCPHosts: []string{reg.host}})
	for range 3 {
		if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if reg.auth.Authenticated("oauth2accesstoken") == 0 {
		t.Fatal("no registry request was made with the Google token")
	}
	if n := c.count("metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"); n != 1 {
		t.Errorf("%d metadata token requests for 3 pulls, want 1: %v", n, c.calls)
	}
}

// Each identity is asked about its own hosts and no other: a registry no
// pattern names never reaches an identity endpoint, whichever are on.
func TestAnIdentityIsNeverAskedAboutAnotherRegistry(t *testing.T) {
	clean(t)
	azureWorkload(t)
	irsa(t)
	c := newCloud(t)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(c.metadata.URL, "http://"))
	reg := startPrivate(t, &devregistry.TokenAuth{Users: map[string]string{"AWS": c.ecrPassword}})
	// Default patterns: the loopback registry is none of the clouds'.
	rc := newClient(t, c, reg.host, credentials.Options{Azure: credentials.On, AWS: credentials.On, GCP: credentials.On})
	err := pull(t, rc, reg.ref, 5*time.Second)
	var re *resolve.Error
	if !errors.As(err, &re) || re.Reason != "unauthorized" {
		t.Fatalf("a registry no identity serves: %v, want unauthorized", err)
	}
	if c.total() != 0 {
		t.Errorf("identity endpoints were asked about a registry they do not serve: %v", c.calls)
	}
	// Named for ECR only: only AWS is asked.
	rc = newClient(t, c, reg.host, credentials.Options{Azure: credentials.On, AWS: credentials.On, GCP: credentials.On, AWSHosts: []string{reg.host}})
	if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for e := range c.calls {
		if !strings.HasPrefix(e, "sts.") && !strings.HasPrefix(e, "api.ecr.") {
			t.Errorf("%s was asked about an ECR registry", e)
		}
	}
}

// A token is used until shortly before it ends; then a new one is fetched.
func TestAnExpiringTokenIsReplaced(t *testing.T) {
	clean(t)
	irsa(t)
	c := newCloud(t)
	c.expiresIn = 12 * time.Hour
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	c.now = func() time.Time { return time.Unix(0, now.Load()) }
	reg := startPrivate(t, &devregistry.TokenAuth{Users: map[string]string{"AWS": c.ecrPassword}})
	rc := newClient(t, c, reg.host, credentials.Options{AWS: credentials.On, AWSHosts: []string{reg.host},
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	const ecr = "api.ecr.eu-west-1.amazonaws.com/#AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
	if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(11 * time.Hour))
	if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := c.count(ecr); n != 1 {
		t.Fatalf("%d token fetches while the first token lasts, want 1", n)
	}
	now.Add(int64(time.Hour)) // the first token has ended
	if err := pull(t, rc, reg.ref, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := c.count(ecr); n != 2 {
		t.Errorf("%d token fetches after the first token ended, want 2", n)
	}
}

// A failing or hanging identity endpoint is a per-key error inside the
// deadline that names the registry, the identity and what to configure,
// and never the secret.
func TestAFailingIdentityIsAnActionableErrorInsideTheDeadline(t *testing.T) {
	for _, mode := range []string{"fail", "hang"} {
		t.Run(mode, func(t *testing.T) {
			clean(t)
			azureWorkload(t)
			c := newCloud(t)
			c.fail, c.hang = mode == "fail", mode == "hang"
			reg := startPrivate(t, &devregistry.TokenAuth{RefreshLifetime: time.Hour,
				Exchange: func(tok string) (string, bool) { return "entra", tok == "entra-workload" }})
			rc := newClient(t, c, reg.host, credentials.Options{Azure: credentials.Auto, AzureHosts: []string{reg.host}})
			err := pull(t, rc, reg.ref, time.Second)
			var re *resolve.Error
			if !errors.As(err, &re) || re.Reason != "credentials" {
				t.Fatalf("got %v, want a credentials error", err)
			}
			for _, want := range []string{reg.ref, "registry " + reg.host, "Azure workload identity", "AcrPull"} {
				if !strings.Contains(re.Msg, want) {
					t.Errorf("the error does not name %q: %s", want, re.Msg)
				}
			}
			if strings.Contains(re.Msg, "federated-token") {
				t.Errorf("the error shows the federated token: %s", re.Msg)
			}
			// A hanging endpoint is given up at the lookup's deadline, not at
			// the fetch's own 30 s bound.
			if mode == "hang" && !strings.Contains(re.Msg, "no token before the deadline") {
				t.Errorf("a hanging identity: %s, want the deadline named", re.Msg)
			}
		})
	}
}

func TestOptionsAreChecked(t *testing.T) {
	clean(t)
	for _, o := range []credentials.Options{
		{Azure: "yes"},
		{AWS: credentials.On, AWSHosts: []string{"*"}},
		{GCP: credentials.On, GCPHosts: []string{"gcr.io/team"}},
		{Azure: credentials.On, AzureHosts: []string{"[.azurecr.io"}},
	} {
		if _, err := registry.New(registry.Options{PerHostConcurrency: 1, Credentials: o}, metrics.New()); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
