package vulndb_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v6 "github.com/anchore/grype/grype/db/v6"
	v6dist "github.com/anchore/grype/grype/db/v6/distribution"

	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// mirror serves a listing and a database archive the way Grype's own
// distribution does: /v6/latest.json naming a .tar.gz and its checksum.
type mirror struct {
	listing atomic.Pointer[[]byte]
	archive atomic.Pointer[[]byte]
	gets    atomic.Int64
}

func (m *mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v6/latest.json":
		_, _ = w.Write(*m.listing.Load())
	case strings.HasSuffix(r.URL.Path, ".tar.gz"):
		if r.Method == http.MethodGet {
			m.gets.Add(1)
		}
		_, _ = w.Write(*m.archive.Load())
	default:
		http.NotFound(w, r)
	}
}

// publish builds a database of vulns, archives it and lists it.
func (m *mirror) publish(t *testing.T, vulns []samples.Vuln, tamper bool) {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "vulnerability.db")
	if err := samples.WriteDBOf(dbPath, vulns); err != nil {
		t.Fatal(err)
	}
	desc, err := v6.ReadDescription(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: "vulnerability.db", Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(data)
	_ = tw.Close()
	_ = gz.Close()
	archive := buf.Bytes()
	sum := sha256.Sum256(archive)
	if tamper {
		archive = append([]byte(nil), archive...)
		archive[len(archive)/2] ^= 0xff
	}
	doc := v6dist.NewLatestDocument(v6dist.Archive{Description: *desc, Path: "vulnerability-db.tar.gz", Checksum: "sha256:" + hex.EncodeToString(sum[:])})
	listing, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	m.listing.Store(&listing)
	m.archive.Store(&archive)
}

func TestDownloadVerifyAndUpdateFromAMirror(t *testing.T) {
	m := &mirror{}
	srv := httptest.NewServer(m)
	defer srv.Close()
	m.publish(t, samples.Vulns, false)

	db, err := vulndb.New(vulndb.Options{Dir: t.TempDir(), URL: srv.URL}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	updated, err := db.Update()
	if err != nil || !updated || db.Current() == "" {
		t.Fatalf("first download: updated %v, err %v, current %q", updated, err, db.Current())
	}
	first := db.Current()
	if updated, err := db.Update(); err != nil || updated {
		t.Errorf("nothing newer: updated %v, err %v", updated, err)
	}
	if m.gets.Load() != 1 {
		t.Errorf("%d archive downloads; the unchanged listing must not download again", m.gets.Load())
	}

	// A newer database whose archive was tampered with is refused; the
	// current one stays.
	newer := append(append([]samples.Vuln(nil), samples.Vulns...), samples.Vuln{ID: "MOAT-TEST-0100", Package: "x", Severity: "low"})
	waitNextSecond()
	m.publish(t, newer, true)
	if _, err := db.Update(); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("tampered archive: %v", err)
	}
	if db.Current() != first {
		t.Errorf("a failed update replaced the database")
	}
	m.publish(t, newer, false)
	if updated, err := db.Update(); err != nil || !updated || db.Current() == first {
		t.Errorf("newer database: updated %v, err %v", updated, err)
	}
}

// waitNextSecond waits until a database built now is newer than the last:
// build times are rounded to the second.
func waitNextSecond() { time.Sleep(1500 * time.Millisecond) }

// Two replicas (here, processes) that download the same archive name the
// database alike: reports are keyed by the ID, and replicas that disagree
// share none. Grype's import digest of one local file was once seen to
// differ between two processes, so each ID here comes from its own process.
func TestTwoReplicasNameADownloadedDatabaseAlike(t *testing.T) {
	if url := os.Getenv("MOAT_VULNDB_REPLICA_URL"); url != "" { // the replica process
		db, err := vulndb.New(vulndb.Options{Dir: os.Getenv("MOAT_VULNDB_REPLICA_DIR"), URL: url}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Update(); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("id=%s\n", db.Current())
		return
	}
	m := &mirror{}
	srv := httptest.NewServer(m)
	defer srv.Close()
	m.publish(t, samples.Vulns, false)
	var ids []string
	for range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTwoReplicasNameADownloadedDatabaseAlike$")
		cmd.Env = append(os.Environ(), "MOAT_VULNDB_REPLICA_URL="+srv.URL, "MOAT_VULNDB_REPLICA_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		_, id, ok := strings.Cut(string(out), "id=")
		if err != nil || !ok {
			t.Fatalf("replica: %v\n%s", err, out)
		}
		ids = append(ids, strings.Fields(id)[0])
	}
	if ids[0] == "" || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("one archive, IDs %q", ids)
	}
}
