// Package samples builds what the demo and the tests scan: small images
// carrying npm packages, and a tiny Grype database that marks some of those
// packages vulnerable. The IDs (MOAT-TEST-…) are made up; nothing here is
// a real advisory.
package samples

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v6 "github.com/anchore/grype/grype/db/v6"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Vuln is one advisory of the sample database: npm package Package is
// vulnerable below Fixed (or in every version when Fixed is empty). With
// Distro ("debian:12:bookworm": name, major version, codename as
// os-release has them), Package is that release's Debian package instead,
// and versions compare as dpkg's do.
type Vuln struct {
	ID       string
	Package  string
	Fixed    string
	Severity string
	Distro   string
	// Published is the advisory's publication date; zero for none.
	Published time.Time
}

// Vulns is the sample database.
var Vulns = []Vuln{
	{ID: "MOAT-TEST-0001", Package: "moat-sample-critical", Fixed: "2.0.0", Severity: "critical", Published: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
	{ID: "MOAT-TEST-0002", Package: "moat-sample-high", Fixed: "1.5.0", Severity: "high"},
	{ID: "MOAT-TEST-0003", Package: "moat-sample-high", Severity: "medium"},
	{ID: "MOAT-TEST-0004", Package: "moat-sample-low", Fixed: "3.1.0", Severity: "low"},
}

// Later is an advisory the sample database does not have: a later one
// adds it, and the clean image then has a fixable critical finding. It is
// the "CVE published overnight" of the tests and the demo.
var Later = Vuln{ID: "MOAT-TEST-0005", Package: "moat-sample-high-free", Fixed: "1.1.0", Severity: "critical", Published: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}

// WithLater is the sample database and Later: the database after the
// update that brings the new CVE.
func WithLater() []Vuln { return append(Vulns[:len(Vulns):len(Vulns)], Later) }

// Images are the sample images by name: npm packages and their versions.
var Images = map[string]map[string]string{
	// critical: one fixable critical finding.
	"critical": {"moat-sample-critical": "1.0.0", "moat-sample-clean": "1.0.0"},
	// high: one fixable high and one unfixed medium finding.
	"high": {"moat-sample-high": "1.2.0"},
	// clean: packages with no findings (fixed versions).
	"clean": {"moat-sample-critical": "2.0.0", "moat-sample-high-free": "1.0.0"},
	// low: one fixable low finding.
	"low": {"moat-sample-low": "3.0.0"},
}

// WriteDB writes the sample database to path (a *.db file), built now.
func WriteDB(path string) error { return WriteDBOf(path, Vulns) }

// WriteDBOf writes a database of vulns to path.
func WriteDBOf(path string, vulns []Vuln) error {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".vulndb-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w, err := v6.NewWriter(v6.Config{DBDirPath: dir, CacheSizeKiB: 1024})
	if err != nil {
		return fmt.Errorf("sample database: %w", err)
	}
	now := time.Now().UTC()
	prov := &v6.Provider{ID: "moat-samples", Version: "1", Processor: "moat", DateCaptured: &now}
	for _, v := range vulns {
		h := &v6.VulnerabilityHandle{
			Name:          v.ID,
			PublishedDate: published(v.Published),
			Status:        v6.VulnerabilityActive,
			ProviderID:    prov.ID,
			Provider:      prov,
			BlobValue: &v6.VulnerabilityBlob{
				ID:          v.ID,
				Description: "sample advisory for Moat's tests and demo; not a real vulnerability",
				Severities:  []v6.Severity{{Scheme: v6.SeveritySchemeHML, Value: v.Severity, Rank: 1}},
			},
		}
		if err := w.AddVulnerabilities(h); err != nil {
			return fmt.Errorf("sample database: %w", err)
		}
		scheme, eco := "semver", "npm"
		var os *v6.OperatingSystem
		if v.Distro != "" {
			f := strings.SplitN(v.Distro+"::", ":", 3)
			scheme, eco = "dpkg", "deb"
			os = &v6.OperatingSystem{Name: f[0], ReleaseID: f[0], MajorVersion: f[1], Codename: strings.Trim(f[2], ":")}
		}
		r := v6.Range{Version: v6.Version{Type: scheme, Constraint: ">=0"}, Fix: &v6.Fix{State: v6.NotFixedStatus}}
		if v.Fixed != "" {
			r = v6.Range{Version: v6.Version{Type: scheme, Constraint: "<" + v.Fixed}, Fix: &v6.Fix{Version: v.Fixed, State: v6.FixedStatus}}
		}
		ap := &v6.AffectedPackageHandle{
			Vulnerability:   h,
			OperatingSystem: os,
			Package:         &v6.Package{Name: v.Package, Ecosystem: eco},
			BlobValue:       &v6.PackageBlob{Ranges: []v6.Range{r}},
		}
		if err := w.AddAffectedPackages(ap); err != nil {
			return fmt.Errorf("sample database: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("sample database: %w", err)
	}
	return os.Rename(filepath.Join(dir, v6.VulnerabilityDBFileName), path)
}

func published(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Image builds an image holding the npm packages pkgs (name → version)
// under /usr/lib/node_modules.
func Image(pkgs map[string]string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// In name order: one set of packages is always one digest.
	for _, name := range slices.Sorted(maps.Keys(pkgs)) {
		body, _ := json.Marshal(map[string]string{"name": name, "version": pkgs[name], "license": "Apache-2.0"})
		hdr := &tar.Header{Name: "usr/lib/node_modules/" + name + "/package.json", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, err
	}
	return withLayer(layer)
}

func withLayer(layer v1.Layer) (v1.Image, error) {
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(base, layer)
}

// Unreadable is an image whose only layer claims to be a gzipped tar but
// is not: the registry serves it, no scanner can read it.
func Unreadable() (v1.Image, error) {
	return withLayer(static.NewLayer([]byte("this is not a tar archive"), types.OCILayer))
}

// Artifact is an OCI artifact that is not a container image (a Helm chart's
// media types): a registry serves it, a scanner has nothing to catalog.
func Artifact() (v1.Image, error) {
	layer := static.NewLayer([]byte("not a container filesystem"), "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.cncf.helm.config.v1+json")
	return mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: "application/vnd.cncf.helm.chart.content.v1.tar+gzip"})
}
