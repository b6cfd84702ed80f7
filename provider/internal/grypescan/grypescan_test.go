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

// hostRoot copies this machine's own Debian root file system's package
// database into a directory laid out as a node's / (os-release through
// Debian's relative link, dpkg's status file), and returns it with the
// installed versions by package.
func hostRoot(t *testing.T) (string, map[string]string) {
	t.Helper()
	status, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		t.Fatalf("the test reads this machine's Debian package database: %v", err)
	}
	osRelease, err := os.ReadFile("/usr/lib/os-release")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for path, body := range map[string][]byte{"usr/lib/os-release": osRelease, "var/lib/dpkg/status": status} {
		write(t, filepath.Join(root, path), body)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../usr/lib/os-release", filepath.Join(root, "etc/os-release")); err != nil {
		t.Fatal(err)
	}
	installed := map[string]string{}
	for _, para := range strings.Split(string(status), "\n\n") {
		var name, version string
		for _, line := range strings.Split(para, "\n") {
			if v, ok := strings.CutPrefix(line, "Package: "); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(line, "Version: "); ok {
				version = v
			}
		}
		if name != "" && strings.Contains(para, "Status: install ok installed") {
			installed[name] = version
		}
	}
	return root, installed
}

func write(t *testing.T, path string, body []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestANodesRootFileSystemIsScannedForWhatIsInstalled(t *testing.T) {
	root, installed := hostRoot(t)
	bash, tar := installed["bash"], installed["tar"]
	if bash == "" || tar == "" {
		t.Fatalf("this machine's Debian has bash %q and tar %q installed", bash, tar)
	}
	// A container's files under the runtime's storage are the image's, not
	// the node's: a package only listed there is never the node's finding.
	write(t, filepath.Join(root, "var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs/var/lib/dpkg/status"),
		[]byte("Package: moat-container-only\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: amd64\n\n"))
	osRelease, _ := os.ReadFile(filepath.Join(root, "usr/lib/os-release"))
	var major, codename string
	for _, line := range strings.Split(string(osRelease), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_ID="); ok {
			major = strings.Trim(v, `"`)
		}
		if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok {
			codename = v
		}
	}
	distro := "debian:" + major + ":" + codename
	db := newDB(t, vulndb.Options{})
	if err := db.Load(writeDB(t, []samples.Vuln{
		{ID: "MOAT-NODE-0001", Package: "bash", Fixed: bash + "+moat1", Severity: "critical", Distro: distro},
		{ID: "MOAT-NODE-0002", Package: "tar", Severity: "medium", Distro: distro},
		{ID: "MOAT-NODE-0003", Package: "bash", Fixed: "0.1-1", Severity: "high", Distro: distro}, // fixed long before
		{ID: "MOAT-NODE-0004", Package: "moat-not-installed", Fixed: "2.0-1", Severity: "critical", Distro: distro},
		{ID: "MOAT-NODE-0005", Package: "moat-container-only", Fixed: "2.0-1", Severity: "critical", Distro: distro},
	})); err != nil {
		t.Fatal(err)
	}
	e := engine(t, testenv.StartRegistry(t), db)
	res, err := e.ScanRoot(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.OS, "Debian GNU/Linux") {
		t.Errorf("the distribution is read from the root's os-release: %q", res.OS)
	}
	got := map[string]answer.Finding{}
	for _, f := range res.Findings {
		got[f.ID] = f
	}
	if f := got["MOAT-NODE-0001"]; f.Package != "bash" || f.Installed != bash || f.Fixed != bash+"+moat1" || f.Severity != "critical" {
		t.Errorf("bash's advisory: %+v", f)
	}
	if f := got["MOAT-NODE-0002"]; f.Package != "tar" || f.Installed != tar || f.Fixed != "" || f.Severity != "medium" {
		t.Errorf("tar's unfixed advisory: %+v", f)
	}
	for _, id := range []string{"MOAT-NODE-0003", "MOAT-NODE-0004", "MOAT-NODE-0005"} {
		if f, ok := got[id]; ok {
			t.Errorf("%s is not installed in an affected version on the node, yet reported: %+v", id, f)
		}
	}
	if len(got) != 2 {
		t.Errorf("findings: %s", ids(res.Findings))
	}

	if _, err := e.ScanRoot(context.Background(), filepath.Join(root, "missing")); scan.KindOf(err) != "unsupported" || !strings.Contains(err.Error(), "hostPath") {
		t.Errorf("a root that is not there: %v", err)
	}
}
