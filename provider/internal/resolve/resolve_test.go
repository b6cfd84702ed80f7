package resolve

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/registry"
)

func startRegistry(t *testing.T) (*devregistry.Registry, string) {
	t.Helper()
	reg := devregistry.New()
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return reg, strings.TrimPrefix(srv.URL, "http://")
}

func client(t *testing.T, o registry.Options) *registry.Client {
	t.Helper()
	o.PerHostConcurrency = 4
	c, err := registry.New(o, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parse(t *testing.T, s string) reference.Ref {
	t.Helper()
	r, err := reference.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeAuth(t *testing.T, path, host, user, pass string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	body := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCredentialsFromAMountedDockerConfigAndTheirRotation(t *testing.T) {
	reg, host := startRegistry(t)
	digest, err := devregistry.Push(context.Background(), host+"/private/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	reg.SetBasicAuth("moat", "s3cret")
	authFile := filepath.Join(t.TempDir(), ".dockerconfigjson")
	writeAuth(t, authFile, host, "moat", "s3cret")

	m := metrics.New()
	rc, err := registry.New(registry.Options{PerHostConcurrency: 4, RegistryConfig: authFile, InsecureRegistries: []string{host}}, m)
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{SessionLifetime: 50 * time.Millisecond}, rc, m)
	ref := parse(t, host+"/private/app:v1")
	res, err := r.Resolve(context.Background(), ref)
	if err != nil || res.Digest != digest {
		t.Fatalf("with credentials: %+v, %v; want %s", res, err, digest)
	}

	// The secret is rotated to a password the registry does not accept:
	// once the session ends, the new file is read and the refusal is named.
	writeAuth(t, authFile, host, "moat", "wrong")
	time.Sleep(60 * time.Millisecond)
	_, err = r.Resolve(context.Background(), ref)
	var re *Error
	if !errors.As(err, &re) || re.Reason != "unauthorized" || !strings.Contains(re.Msg, "--registry-config") {
		t.Fatalf("after rotation to a bad password: %v, want an unauthorized error naming --registry-config", err)
	}

	anonymous := New(Options{}, client(t, registry.Options{InsecureRegistries: []string{host}}), m)
	if _, err := anonymous.Resolve(context.Background(), ref); !errors.As(err, &re) || re.Reason != "unauthorized" {
		t.Fatalf("without credentials: %v", err)
	}
}

func TestPlainHTTPOnlyToListedRegistries(t *testing.T) {
	_, host := startRegistry(t)
	if _, err := devregistry.Push(context.Background(), host+"/app:v1"); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	r := New(Options{}, client(t, registry.Options{}), m) // the loopback registry is not listed
	_, err := r.Resolve(context.Background(), parse(t, host+"/app:v1"))
	var re *Error
	if !errors.As(err, &re) || re.Reason != "insecure_refused" || !strings.Contains(re.Msg, "--insecure-registries") {
		t.Fatalf("unlisted plain-HTTP registry: %v, want insecure_refused", err)
	}
}
