package grypescan_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/vulndb"
	"github.com/moat-dev/moat/provider/testenv"
)

// BenchmarkScannerMemory is the heap the engine holds with the sample
// database loaded, after a scan; run it first (-benchtime=1x) so syft's
// license scanner, built once per process, is counted.
func BenchmarkScannerMemory(b *testing.B) {
	host := testenv.StartRegistry(b)
	ref := sample(b, host, "high")
	path := writeDB(b, samples.Vulns)
	for range b.N {
		before := heap()
		db := newDB(b, vulndb.Options{Dir: b.TempDir()})
		if err := db.Load(path); err != nil {
			b.Fatal(err)
		}
		e := engine(b, host, db)
		if _, err := e.Scan(context.Background(), ref); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(heap()-before)/(1<<20), "MiB")
		runtime.KeepAlive(e)
	}
}

// BenchmarkScanSmallImage scans the "high" sample image (one npm package)
// from a registry on loopback: pull, catalog, match.
func BenchmarkScanSmallImage(b *testing.B) {
	host := testenv.StartRegistry(b)
	ref := sample(b, host, "high")
	db := newDB(b, vulndb.Options{Dir: b.TempDir()})
	if err := db.Load(writeDB(b, samples.Vulns)); err != nil {
		b.Fatal(err)
	}
	e := engine(b, host, db)
	b.ResetTimer()
	for range b.N {
		res, err := e.Scan(context.Background(), ref)
		if err != nil || len(res.Findings) != 2 {
			b.Fatalf("%v %+v", err, res)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "scans/s")
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
