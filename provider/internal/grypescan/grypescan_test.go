package grypescan_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/grypescan"
	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/vulndb"
	"github.com/moat-dev/moat/provider/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func push(t testing.TB, host, repo string, img v1.Image) string {
	t.Helper()
	d, err := devregistry.Write(context.Background(), host+"/"+repo+":v1", img)
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func sample(t testing.TB, host, n string) string {
	t.Helper()
	img, err := samples.Image(samples.Images[n])
	if err != nil {
		t.Fatal(err)
	}
	return push(t, host, "samples/"+n, img)
}

func newDB(t testing.TB, opts vulndb.Options) *vulndb.DB {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "db")
	}
	db, err := vulndb.New(opts, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func writeDB(t testing.TB, vulns []samples.Vuln) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vulnerability.db")
	if err := samples.WriteDBOf(path, vulns); err != nil {
		t.Fatal(err)
	}
	return path
}

func engine(t testing.TB, host string, db *vulndb.DB) *grypescan.Engine {
	t.Helper()
	e, err := grypescan.New(grypescan.Options{Registry: testenv.RegistryClient(t, host)}, db)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ids(fs []answer.Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.ID)
	}
	return strings.Join(s, ",")
}

func TestNoDatabaseMeansScanFailedWithTheReason(t *testing.T) {
	host := testenv.StartRegistry(t)
	ref := sample(t, host, "critical")
	db := newDB(t, vulndb.Options{})
	_, err := engine(t, host, db).Scan(context.Background(), ref)
	if scan.KindOf(err) != "database" || !strings.Contains(err.Error(), "no vulnerability database") {
		t.Fatalf("no database loaded: %v", err)
	}

	corrupt := filepath.Join(t.TempDir(), "vulnerability.db")
	if err := os.WriteFile(corrupt, []byte("SQLite format 3\x00 but not really"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db.Load(corrupt); err == nil {
		t.Fatal("a corrupt database loaded")
	}
	_, err = engine(t, host, db).Scan(context.Background(), ref)
	if scan.KindOf(err) != "database" || !strings.Contains(err.Error(), corrupt) {
		t.Errorf("after a corrupt load the reason names it: %v", err)
	}
	if err := db.Load(filepath.Join(t.TempDir(), "missing.db")); err == nil {
		t.Error("a missing file loaded")
	}
}

func TestTooOldDatabaseFailsScans(t *testing.T) {
	host := testenv.StartRegistry(t)
	ref := sample(t, host, "critical")
	db := newDB(t, vulndb.Options{MaxAge: time.Nanosecond})
	if err := db.Load(writeDB(t, samples.Vulns)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // build times are rounded to the second, up to 0.5s ahead
	_, err := engine(t, host, db).Scan(context.Background(), ref)
	if scan.KindOf(err) != "database" || !strings.Contains(err.Error(), "more than the maximum age") {
		t.Fatalf("%v", err)
	}
}

func TestNewDatabaseSwapsInWhileScansRun(t *testing.T) {
	host := testenv.StartRegistry(t)
	ref := sample(t, host, "high")
	dir := filepath.Join(t.TempDir(), "dbs")
	db := newDB(t, vulndb.Options{Dir: dir})
	first := writeDB(t, samples.Vulns)
	// The second database knows a new advisory for the same package.
	second := writeDB(t, append(append([]samples.Vuln(nil), samples.Vulns...),
		samples.Vuln{ID: "MOAT-TEST-0099", Package: "moat-sample-high", Fixed: "9.0.0", Severity: "critical"}))
	if err := db.Load(first); err != nil {
		t.Fatal(err)
	}
	// Which database each ID is: a reload of one file may get a new ID.
	isSecond := map[string]bool{db.Current(): false}
	e := engine(t, host, db)

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	seen := sync.Map{}
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := e.Scan(context.Background(), ref)
				if err != nil {
					errs <- err
					return
				}
				seen.Store(res.Scanner.DB.ID+" "+ids(res.Findings), true)
			}
		}()
	}
	for i := range 6 { // swap back and forth while the scans run
		time.Sleep(30 * time.Millisecond)
		path := first
		if i%2 == 0 {
			path = second
		}
		if err := db.Load(path); err != nil {
			t.Fatal(err)
		}
		isSecond[db.Current()] = path == second
	}
	time.Sleep(30 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("scan during a swap: %v", err)
	}
	var results []string
	seen.Range(func(k, _ any) bool { results = append(results, k.(string)); return true })
	sawSecond := false
	for _, r := range results {
		id, found, _ := strings.Cut(r, " ")
		second, known := isSecond[id]
		withNew := strings.Contains(found, "MOAT-TEST-0099")
		switch {
		case !known:
			t.Errorf("a scan used a database that was never loaded: %s", r)
		case second != withNew:
			t.Errorf("a scan's findings do not match its database (second: %v): %s", second, r)
		}
		sawSecond = sawSecond || second
	}
	if !sawSecond {
		t.Errorf("no scan saw the second database: %v", results)
	}
	// Old databases are closed and removed once their scans end.
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Errorf("%d database directories left (%v); want the current one only", len(entries), err)
	}
}
