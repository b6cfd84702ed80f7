package lookup

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/resolve"
)

// scripted is a Resolver whose answers the test sets. The real resolver
// against a real registry is tested in the server and resolve tests; this
// one lets the cache's time rules be driven without waiting minutes.
type scripted struct {
	mu     sync.Mutex
	digest string
	err    error
	calls  atomic.Int64
}

func (s *scripted) set(d string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.digest, s.err = d, err
}

func (s *scripted) Resolve(context.Context, reference.Ref) (resolve.Result, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	return resolve.Result{Digest: s.digest}, s.err
}

// clock is a settable time source safe to read from background refreshes.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func newService(t *testing.T, r Resolver, opts Options) (*Service, *clock) {
	t.Helper()
	opts.CacheSize = 100
	opts.ResolveTimeout = time.Second
	s, err := New(opts, r, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{}
	c.ns.Store(time.Unix(1_000_000, 0).UnixNano())
	s.now = c.Now
	s.cache.SetClock(c.Now)
	return s, c
}

func (s *Service) one(t *testing.T, key string) *Answer {
	t.Helper()
	return s.Lookup(context.Background(), time.Now().Add(5*time.Second), []string{key})[0]
}

const d1, d2 = "sha256:1111", "sha256:2222"

func TestDigestAndErrorLifetimes(t *testing.T) {
	r := &scripted{digest: d1}
	s, now := newService(t, r, Options{DigestTTL: time.Minute, ErrorTTL: 5 * time.Second})
	if a := s.one(t, "app:v1"); !strings.Contains(string(a.Validate), d1) {
		t.Fatalf("first answer %s", a.Validate)
	}
	r.set(d2, nil)
	now.Add(59 * time.Second)
	if a := s.one(t, "app:v1"); !strings.Contains(string(a.Validate), d1) || r.calls.Load() != 1 {
		t.Fatalf("within the digest lifetime: %s after %d calls", a.Validate, r.calls.Load())
	}
	now.Add(2 * time.Second)
	if a := s.one(t, "app:v1"); !strings.Contains(string(a.Validate), d2) {
		t.Fatalf("after the digest lifetime: %s", a.Validate)
	}

	r.set("", &resolve.Error{Reason: "not_found", Msg: "gone"})
	if a := s.one(t, "app:v2"); a.Reason != "not_found" {
		t.Fatalf("error answer %+v", a)
	}
	r.set(d1, nil)
	now.Add(4 * time.Second)
	if a := s.one(t, "app:v2"); a.Reason != "not_found" {
		t.Fatalf("error not kept for its lifetime: %+v", a)
	}
	now.Add(2 * time.Second)
	if a := s.one(t, "app:v2"); a.Reason != "" {
		t.Fatalf("error kept past its lifetime: %s", a.Validate)
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	r := &scripted{digest: d1}
	s, now := newService(t, r, Options{DigestTTL: time.Minute, ErrorTTL: time.Second, StaleWhileRevalidate: time.Minute})
	s.one(t, "app:v1")

	// Expired: the stale digest is answered at once and a refresh starts.
	r.set(d2, nil)
	now.Add(70 * time.Second)
	if a := s.one(t, "app:v1"); !strings.Contains(string(a.Validate), d1) {
		t.Fatalf("stale answer %s, want the old digest at once", a.Validate)
	}
	waitFor(t, func() bool { return strings.Contains(string(s.one(t, "app:v1").Validate), d2) })

	// A refresh that fails keeps the stale digest until the window closes.
	r.set("", errors.New("registry down"))
	now.Add(70 * time.Second)
	calls := r.calls.Load()
	if a := s.one(t, "app:v1"); !strings.Contains(string(a.Validate), d2) {
		t.Fatalf("stale answer %s", a.Validate)
	}
	waitFor(t, func() bool { return r.calls.Load() > calls })
	if a := s.one(t, "app:v1"); !strings.Contains(string(a.Validate), d2) {
		t.Fatalf("a failed refresh replaced the stale digest: %s", a.Validate)
	}
	now.Add(time.Minute)
	if a := s.one(t, "app:v1"); a.Reason == "" {
		t.Fatalf("past the stale window the failure must show: %s", a.Validate)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type panicky struct{}

func (panicky) Resolve(context.Context, reference.Ref) (resolve.Result, error) { panic("boom") }

func TestAPanickingResolverIsAnErrorNotACrash(t *testing.T) {
	s, _ := newService(t, panicky{}, Options{DigestTTL: time.Minute, ErrorTTL: time.Second})
	if a := s.one(t, "app:v1"); a.Reason != "internal" {
		t.Fatalf("answer %+v", a)
	}
}

func TestSpellingsShareOneResolution(t *testing.T) {
	r := &scripted{digest: d1}
	s, _ := newService(t, r, Options{DigestTTL: time.Minute, ErrorTTL: time.Second})
	as := s.Lookup(context.Background(), time.Now().Add(5*time.Second), []string{"nginx", "docker.io/library/nginx:latest", "index.docker.io/library/nginx"})
	for _, a := range as {
		if !strings.Contains(string(a.Validate), `"digest":"`+d1+`"`) || !strings.Contains(string(a.Mutate), `"docker.io/library/nginx:latest@`+d1+`"`) {
			t.Errorf("answer %s", a.Validate)
		}
	}
	if n := r.calls.Load(); n != 1 {
		t.Errorf("%d resolutions for three spellings asked together, want 1", n)
	}
}
