package shared_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/testenv"
)

// report50 is a rejected report listing 50 findings, as the default policy
// lists at most, with realistic IDs, packages, versions, package URLs and
// dates.
func report50() []byte {
	res := scan.Result{Scanner: answer.Tool{Name: "grype", Version: "0.100.0", DB: answer.Database{ID: "v6.1.4 2026-12-01T00:00:00Z", Built: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}},
		ScannedAt: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), FirstScanned: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)}
	sev := []string{"critical", "high", "medium", "low"}
	for i := range 80 {
		res.Findings = append(res.Findings, answer.Finding{ID: fmt.Sprintf("CVE-2026-%05d", 10000+i), Severity: sev[i%4],
			Package: fmt.Sprintf("libexample%d", i), Installed: "1.2.3-r4", Fixed: "1.2.3-r5",
			PURL: fmt.Sprintf("pkg:apk/alpine/libexample%d@1.2.3-r4?arch=x86_64&distro=alpine-3.20.3", i), FirstSeen: "2026-11-02T09:00:00Z", Published: "2026-10-14T00:00:00Z"})
	}
	r := scan.DefaultPolicy().Judge(res, time.Now())
	return r.Fragment()
}

// BenchmarkSharedReport stores and reads one report of 50 findings in a
// real redis-server on loopback; it reports the bytes Redis holds for it
// and the latency of a read (a first-tier miss answered from Redis).
func BenchmarkSharedReport(b *testing.B) {
	r := testenv.StartRedis(b)
	s, _ := open(b, r, "moat:")
	ctx := context.Background()
	rep := report50()
	key := "check:scan:0123456789abcdef01234567:sha256:" + fmt.Sprintf("%064x", 1)
	s.Set(ctx, key, rep, time.Hour)
	raw := r.Client()
	defer raw.Close()
	stored, err := raw.StrLen(ctx, "moat:"+key).Result()
	if err != nil {
		b.Fatal(err)
	}
	mem, _ := raw.MemoryUsage(ctx, "moat:"+key).Result()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, _, ok := s.Get(ctx, key); !ok {
			b.Fatal("miss")
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(len(rep)), "report-bytes")
	b.ReportMetric(float64(stored), "stored-bytes")
	b.ReportMetric(float64(mem), "redis-memory-bytes")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
