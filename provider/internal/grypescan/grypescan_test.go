package grypescan_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/moat-dev/moat/provider/internal/grypescan"
	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

func push(t *testing.T, host, repo string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(host + "/" + repo + ":v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return host + "/" + repo + "@" + d.String()
}

func engine(t *testing.T) *grypescan.Engine {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "vulnerability.db")
	if err := samples.WriteDB(path); err != nil {
		t.Fatal(err)
	}
	db, err := vulndb.New(vulndb.Options{Dir: filepath.Join(dir, "db")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Load(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	e, err := grypescan.New(grypescan.Options{Insecure: func(string) bool { return true }}, db)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestScanSamples(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	e := engine(t)
	for n, pkgs := range samples.Images {
		img, err := samples.Image(pkgs)
		if err != nil {
			t.Fatal(err)
		}
		ref := push(t, host, "samples/"+n, img)
		res, err := e.Scan(context.Background(), ref)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		t.Logf("%s: %+v", n, res)
		r := scan.DefaultPolicy().Judge(res)
		t.Logf("%s: %s", n, r.Fragment())
	}
}
