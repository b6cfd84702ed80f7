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
)

func startRegistry(t *testing.T) (*devregistry.Registry, string) {
	t.Helper()
	reg := devregistry.New()
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return reg, strings.TrimPrefix(srv.URL, "http://")
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

	r := New(Options{RegistryConfig: authFile, InsecureRegistries: []string{host}, SessionLifetime: 50 * time.Millisecond}, metrics.New())
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

	anonymous := New(Options{InsecureRegistries: []string{host}}, metrics.New())
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
	r := New(Options{}, m) // the loopback registry is not listed
	_, err := r.Resolve(context.Background(), parse(t, host+"/app:v1"))
	var re *Error
	if !errors.As(err, &re) || re.Reason != "insecure_refused" || !strings.Contains(re.Msg, "--insecure-registries") {
		t.Fatalf("unlisted plain-HTTP registry: %v, want insecure_refused", err)
	}
}

func TestPerHostLimitBoundsConcurrency(t *testing.T) {
	reg, host := startRegistry(t)
	const tags = 6
	for i := range tags {
		if _, err := devregistry.Push(context.Background(), fmt.Sprintf("%s/app:t%d", host, i)); err != nil {
			t.Fatal(err)
		}
	}
	reg.SetDelay(100 * time.Millisecond) // long enough that the six overlap
	r := New(Options{PerHostConcurrency: 2, InsecureRegistries: []string{host}}, metrics.New())
	// One resolution first, so the session (ping) exists.
	if _, err := r.Resolve(context.Background(), parse(t, host+"/app:t0")); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, tags)
	for i := range tags {
		go func() {
			_, err := r.Resolve(context.Background(), parse(t, fmt.Sprintf("%s/app:t%d", host, i)))
			errc <- err
		}()
	}
	for range tags {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if peak := reg.PeakInFlight(); peak != 2 {
		t.Errorf("at most %d manifest requests were in flight at once, want exactly the limit of 2", peak)
	}
	// A slot that never frees: the deadline names the limit.
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	slot := r.slot(host)
	slot <- struct{}{}
	slot <- struct{}{}
	_, err := r.Resolve(ctx, parse(t, host+"/app:t1"))
	var re *Error
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "--registry-concurrency") {
		t.Errorf("full slots: %v", err)
	}
}
