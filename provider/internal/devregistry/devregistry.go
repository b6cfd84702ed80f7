// Package devregistry runs go-containerregistry's in-memory OCI registry
// with what development and tests need around it: sample images, a request
// counter, added latency, faults on demand (429, 500, hang), and the
// authentication real registries ask for (basic, bearer tokens, ACR's).
package devregistry

import (
	"context"
	"io"
	"log"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/moat-dev/moat/provider/internal/samples"
)

// Fault is what the registry does to manifest requests instead of
// answering them.
type Fault int32

const (
	// NoFault answers normally.
	NoFault Fault = iota
	// TooManyRequests answers 429 with a Retry-After.
	TooManyRequests
	// ServerError answers 503.
	ServerError
	// Hang holds the request until the client gives up.
	Hang
)

// Registry is an http.Handler serving an in-memory registry.
type Registry struct {
	inner http.Handler
	// Delay is added before every request is served.
	delay atomic.Int64
	fault atomic.Int32
	// manifestHeads counts HEAD requests for manifests: digest resolutions.
	manifestHeads atomic.Int64
	requests      atomic.Int64
	auth          atomic.Pointer[[2]string]
	tokens        atomic.Pointer[TokenAuth]
	inFlight      atomic.Int64
	peakInFlight  atomic.Int64
}

// PeakInFlight is the most manifest requests served at once so far.
func (r *Registry) PeakInFlight() int64 { return r.peakInFlight.Load() }

// SetBasicAuth requires HTTP basic authentication with user and password
// on every request from now on.
func (r *Registry) SetBasicAuth(user, password string) {
	r.auth.Store(&[2]string{user, password})
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{inner: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
}

// SetDelay adds d of latency to every request.
func (r *Registry) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// SetFault makes manifest requests fail as f says.
func (r *Registry) SetFault(f Fault) { r.fault.Store(int32(f)) }

// ManifestHeads is the number of manifest HEAD requests served so far.
func (r *Registry) ManifestHeads() int64 { return r.manifestHeads.Load() }

// Requests is the number of requests served so far.
func (r *Registry) Requests() int64 { return r.requests.Load() }

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	if strings.Contains(req.URL.Path, "/manifests/") {
		n := r.inFlight.Add(1)
		defer r.inFlight.Add(-1)
		for peak := r.peakInFlight.Load(); n > peak && !r.peakInFlight.CompareAndSwap(peak, n); peak = r.peakInFlight.Load() {
		}
	}
	if d := time.Duration(r.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-req.Context().Done():
			return
		}
	}
	if a := r.tokens.Load(); a != nil && a.serve(w, req) {
		return
	}
	if want := r.auth.Load(); want != nil {
		if u, p, ok := req.BasicAuth(); !ok || u != want[0] || p != want[1] {
			w.Header().Set("WWW-Authenticate", `Basic realm="moat-dev"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
	}
	isManifest := strings.Contains(req.URL.Path, "/manifests/")
	if isManifest && req.Method == http.MethodHead {
		r.manifestHeads.Add(1)
	}
	if isManifest {
		switch Fault(r.fault.Load()) {
		case TooManyRequests:
			w.Header().Set("Retry-After", "30")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
			return
		case ServerError:
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		case Hang:
			<-req.Context().Done()
			return
		}
	}
	r.inner.ServeHTTP(w, req)
}

// Image is a sample image pushed by Seed.
type Image struct {
	Ref    string // as pushed, e.g. "127.0.0.1:5001/demo/app:v1"
	Digest string
	Index  bool
}

// Seed pushes the sample images to the registry at host ("127.0.0.1:5001"):
// demo/app:v1 and :v2, demo/nginx:1.27 and :latest (one digest), and
// demo/multiarch:1.0, an index of linux/amd64 and linux/arm64 images, and
// the scan samples scan/<name>:1.0 (see package samples) with
// scan/unreadable:1.0, which no scanner can read.
func Seed(ctx context.Context, host string) ([]Image, error) {
	var out []Image
	push := func(repoTag string, img v1.Image) error {
		d, err := Write(ctx, host+"/"+repoTag, img)
		if err != nil {
			return err
		}
		out = append(out, Image{Ref: host + "/" + repoTag, Digest: d.DigestStr()})
		return nil
	}
	for _, tag := range []string{"demo/app:v1", "demo/app:v2"} {
		img, err := random.Image(512, 1)
		if err != nil {
			return nil, err
		}
		if err := push(tag, img); err != nil {
			return nil, err
		}
	}
	nginx, err := random.Image(512, 2)
	if err != nil {
		return nil, err
	}
	for _, tag := range []string{"demo/nginx:1.27", "demo/nginx:latest"} {
		if err := push(tag, nginx); err != nil {
			return nil, err
		}
	}
	for _, n := range sortedNames() {
		img, err := samples.Image(samples.Images[n])
		if err != nil {
			return nil, err
		}
		if err := push("scan/"+n+":1.0", img); err != nil {
			return nil, err
		}
	}
	bad, err := samples.Unreadable()
	if err != nil {
		return nil, err
	}
	if err := push("scan/unreadable:1.0", bad); err != nil {
		return nil, err
	}
	idx, err := multiArch()
	if err != nil {
		return nil, err
	}
	ref, err := name.NewTag(host+"/demo/multiarch:1.0", name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		return nil, err
	}
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	return append(out, Image{Ref: ref.String(), Digest: d.String(), Index: true}), nil
}

// Push writes a random image under ref ("host/repo:tag") and returns its
// digest; tests use it to move a tag.
func Push(ctx context.Context, ref string) (string, error) {
	img, err := random.Image(256, 1)
	if err != nil {
		return "", err
	}
	d, err := Write(ctx, ref, img)
	if err != nil {
		return "", err
	}
	return d.DigestStr(), nil
}

// Write pushes img under ref ("host/repo:tag", plain HTTP: a development
// registry) and returns the digest reference it now has.
func Write(ctx context.Context, ref string, img v1.Image) (name.Digest, error) {
	t, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.Write(t, img, remote.WithContext(ctx)); err != nil {
		return name.Digest{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return t.Context().Digest(d.String()), nil
}

func sortedNames() []string {
	var ns []string
	for n := range samples.Images {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func multiArch() (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(256, 1)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: arch},
		}})
	}
	return mutate.AppendManifests(empty.Index, adds...), nil
}
