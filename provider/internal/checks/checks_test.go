package checks

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/metrics"
)

// counting is a check whose outcome is its version and a run count; it
// panics on images named "panic".
type counting struct {
	runs    atomic.Int64
	version atomic.Value
}

func (c *counting) Run(_ context.Context, image string) Outcome {
	if strings.Contains(image, "panic") {
		panic("boom")
	}
	n := c.runs.Add(1)
	v := c.Version()
	return Outcome{Fragment: []byte(`"run":` + string(rune('0'+n)) + `,"v":"` + v + `"`), TTL: time.Hour, Version: v, Status: "ok"}
}

func (c *counting) Failed(_ string, err error) Outcome {
	return Outcome{Fragment: []byte(`"failed":"` + err.Error() + `"`), TTL: time.Hour, Status: "failed", Kind: "x"}
}

func (c *counting) Pending(reason string) []byte { return []byte(`"pending":true`) }

func (c *counting) Version() string { return c.version.Load().(string) }

const digest = "sha256:0123456789012345678901234567890123456789012345678901234567890123"

func start(t *testing.T, c Check) *Service {
	t.Helper()
	s, err := New("check", Options{Workers: 1, QueueSize: 4, Timeout: time.Second, CacheSize: 10}, c,
		metrics.New().Scans, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestWaitAndCacheAndRecheckOnANewVersion(t *testing.T) {
	c := &counting{}
	c.version.Store("1")
	s := start(t, c)
	img := "r.example/app@" + digest
	if e := s.Get(context.Background(), img, time.Now().Add(5*time.Second)); string(e.Fragment) != `"run":1,"v":"1"` {
		t.Fatalf("waited for the check: %s", e.Fragment)
	}
	if e := s.Get(context.Background(), "other.example/app@"+digest, time.Time{}); string(e.Fragment) != `"run":1,"v":"1"` || c.runs.Load() != 1 {
		t.Errorf("another repository of the digest is checked again: %s", e.Fragment)
	}
	c.version.Store("2")
	if e := s.Get(context.Background(), img, time.Time{}); string(e.Fragment) != `"run":1,"v":"1"` {
		t.Errorf("on a new version the old outcome is served while rechecking: %s", e.Fragment)
	}
	deadline := time.Now().Add(5 * time.Second)
	for string(s.Get(context.Background(), img, time.Time{}).Fragment) != `"run":2,"v":"2"` {
		if time.Now().After(deadline) {
			t.Fatal("not rechecked with the new version")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPanicIsAFailureAndBadKeysAreRefused(t *testing.T) {
	c := &counting{}
	c.version.Store("1")
	s := start(t, c)
	e := s.Get(context.Background(), "r.example/panic@"+digest, time.Now().Add(5*time.Second))
	if !strings.Contains(string(e.Fragment), "internal error in the check") {
		t.Errorf("a panicking check: %s", e.Fragment)
	}
	if e := s.Get(context.Background(), "r.example/app:v1", time.Time{}); !strings.Contains(string(e.Fragment), "not a digest reference") {
		t.Errorf("a tag: %s", e.Fragment)
	}
	if _, err := New("check", Options{Workers: 0, Timeout: time.Second}, c, metrics.New().Scans, nil); err == nil {
		t.Error("no workers accepted")
	}
}
