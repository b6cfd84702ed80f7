package lookup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/resolve"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/scans"
)

// digestPerTag answers a distinct, realistic digest for every tag.
type digestPerTag struct{}

func (digestPerTag) Resolve(_ context.Context, r reference.Ref) (resolve.Result, error) {
	d := fmt.Sprintf("%064x", len(r.Tag)*7919+int(r.Tag[len(r.Tag)-1]))
	return resolve.Result{Digest: "sha256:" + d, MediaType: "application/vnd.oci.image.index.v1+json"}, nil
}

// BenchmarkMemoryPerCachedEntry fills the cache with 100,000 resolved
// references, as the provider caches them, and reports the heap each costs.
func BenchmarkMemoryPerCachedEntry(b *testing.B) {
	const n = 100_000
	for range b.N {
		s, err := New(Options{CacheSize: n, DigestTTL: time.Hour, ErrorTTL: time.Second, ResolveTimeout: time.Second},
			digestPerTag{}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("registry.example.com/team-%d/service-%d:v1.%d.%d", i%50, i, i%10, i%7)
		}
		before := heap()
		deadline := time.Now().Add(time.Minute)
		for i := 0; i < n; i += 1000 {
			for _, a := range s.Lookup(context.Background(), deadline, keys[i:i+1000]) {
				if a.Reason != "" {
					b.Fatal(string(a.Validate))
				}
			}
		}
		after := heap()
		if s.cache.Len() != n {
			b.Fatalf("cache holds %d entries, want %d", s.cache.Len(), n)
		}
		keyBytes := 0
		for _, k := range keys {
			keyBytes += len(k)
		}
		perEntry := float64(after-before) / n
		b.ReportMetric(perEntry, "B/entry")
		b.ReportMetric(float64(keyBytes)/n, "key-B/entry")
		b.Logf("%d cached entries: %.0f bytes each (target under 2048), keys included; answer bodies: %d + %d bytes",
			n, perEntry, len(mustGet(s, keys[0]).Validate), len(mustGet(s, keys[0]).Mutate))
		runtime.KeepAlive(keys)
		runtime.KeepAlive(s)
	}
}

func mustGet(s *Service, k string) *Answer {
	a, _ := s.cache.Get(k)
	return a
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCachedLookup is the in-process cost of answering 100 cached keys
// (no TLS, no HTTP): the part of a request the cache decides.
func BenchmarkCachedLookup(b *testing.B) {
	s, err := New(Options{CacheSize: 1000, DigestTTL: time.Hour, ErrorTTL: time.Second, ResolveTimeout: time.Second},
		digestPerTag{}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("ghcr.io/org/app-%d:v%d", i, i)
	}
	deadline := time.Now().Add(time.Hour)
	s.Lookup(context.Background(), deadline, keys)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, a := range s.Lookup(context.Background(), deadline, keys) {
			if bytes.HasPrefix(a.Validate, []byte(`"error"`)) {
				b.Fatal(string(a.Validate))
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/key")
}

// instantScanner answers every scan at once with two findings: with it,
// BenchmarkCachedLookupWithReport measures the report cache and the
// composition of the value, not a scanner.
type instantScanner struct{}

func (instantScanner) Database() string { return "bench" }

func (instantScanner) Scan(context.Context, string) (scan.Result, error) {
	return scan.Result{Findings: []answer.Finding{
		{ID: "CVE-2026-0001", Severity: "high", Package: "openssl", Installed: "3.0.1", Fixed: "3.0.2"},
		{ID: "CVE-2026-0002", Severity: "low", Package: "zlib", Installed: "1.2.11"},
	}, Scanner: answer.Tool{Name: "grype", DB: answer.Database{ID: "bench"}}}, nil
}

// BenchmarkCachedLookupWithReport is BenchmarkCachedLookup with a cached
// scan report added to every value.
func BenchmarkCachedLookupWithReport(b *testing.B) {
	m := metrics.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(Options{CacheSize: 1000, DigestTTL: time.Hour, ErrorTTL: time.Second, ResolveTimeout: time.Second}, digestPerTag{}, m, log)
	if err != nil {
		b.Fatal(err)
	}
	opts := scans.DefaultOptions()
	opts.QueueSize = 1000
	sc, err := scans.New(opts, instantScanner{}, m, log)
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	s.AddChecks(0, sc)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("ghcr.io/org/app-%d:v%d", i, i)
	}
	deadline := time.Now().Add(time.Hour)
	for pending := true; pending; {
		pending = false
		for _, a := range s.Lookup(context.Background(), deadline, keys) {
			pending = pending || bytes.Contains(a.Validate, []byte(answer.ReportNotAvailable))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var out []*Answer
	for range b.N {
		out = s.Lookup(context.Background(), deadline, keys)
	}
	b.StopTimer()
	for _, a := range out {
		if !bytes.Contains(a.Validate, []byte(`"status":"accepted"`)) {
			b.Fatal(string(a.Validate))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/key")
}
