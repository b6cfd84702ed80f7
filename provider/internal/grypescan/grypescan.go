// Package grypescan is the embedded scanner: the image is pulled through
// Moat's registry client into a temporary OCI layout (no container
// engine), syft catalogs it, and Grype matches the packages against the
// vulnerability database of a vulndb.DB.
package grypescan

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/anchore/grype/grype"
	"github.com/anchore/grype/grype/distro"
	"github.com/anchore/grype/grype/match"
	"github.com/anchore/grype/grype/matcher"
	grypepkg "github.com/anchore/grype/grype/pkg"
	"github.com/anchore/grype/grype/vulnerability"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/source"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// Options configure an Engine.
type Options struct {
	// Registry pulls images: the client digest resolution uses, with its
	// credentials, plain-HTTP refusal, limits and counting.
	Registry *registry.Client
	// Platform picks the image of a multi-platform index; empty means
	// linux/amd64 for an index and no check for a single image (whose
	// config may not name a platform at all).
	Platform string
}

// Engine scans images. It is safe for concurrent use.
type Engine struct {
	opts     Options
	platform *v1.Platform // nil: go-containerregistry's default, linux/amd64
	db       *vulndb.DB
	// base carries syft's license scanner, built once: building it per scan
	// costs most of a second.
	base    context.Context
	sbom    *syft.CreateSBOMConfig
	version string
}

// licenseContext carries syft's license scanner, which never changes: one
// per process.
var licenseContext = sync.OnceValues(func() (context.Context, error) {
	return syft.SetContextLicenseScanner(context.Background(), syft.DefaultCreateSBOMConfig().Licenses)
})

// New returns an Engine scanning with db.
func New(opts Options, db *vulndb.DB) (*Engine, error) {
	cfg := syft.DefaultCreateSBOMConfig().WithTool("moat", "").WithParallelism(1)
	base, err := licenseContext()
	if err != nil {
		return nil, fmt.Errorf("grype: %w", err)
	}
	if opts.Registry == nil {
		return nil, fmt.Errorf("grype: no registry client")
	}
	var platform *v1.Platform
	if opts.Platform != "" {
		if platform, err = v1.ParsePlatform(opts.Platform); err != nil {
			return nil, fmt.Errorf("scan platform %q: %w", opts.Platform, err)
		}
	}
	return &Engine{platform: platform, opts: opts, db: db, base: base, sbom: cfg, version: moduleVersion("github.com/anchore/grype")}, nil
}

// Database identifies the database scans use now.
func (e *Engine) Database() string { return e.db.Current() }

// Scan catalogs image (by digest) and matches its packages.
func (e *Engine) Scan(ctx context.Context, img string) (scan.Result, error) {
	ref, err := e.opts.Registry.Digest(img, name.StrictValidation)
	if err != nil {
		return scan.Result{}, scan.Errorf("unsupported", "%s: scans need a digest reference: %v", img, err)
	}
	snap, release, err := e.db.Acquire()
	if err != nil {
		return scan.Result{}, &scan.Error{Kind: "database", Err: err}
	}
	defer release()

	sctx, done := e.scanContext(ctx)
	defer done()

	dir, err := e.pull(sctx, ref)
	if err != nil {
		return scan.Result{}, e.failure(ctx, readKind(err), fmt.Errorf("%s: the image could not be read from its registry: %w", img, err))
	}
	defer os.RemoveAll(dir)
	src, err := syft.GetSource(sctx, dir, syft.DefaultGetSourceConfig().WithSources("oci-dir"))
	if err != nil {
		return scan.Result{}, e.failure(ctx, readKind(err), fmt.Errorf("%s: the image could not be read: %w", img, err))
	}
	defer src.Close()
	return e.match(ctx, sctx, snap, src, img)
}

// HostExcludes are the parts of a node's root file system a node scan
// skips: kernel and runtime file systems, and the container runtimes' and
// the kubelet's storage, whose files belong to images (scanned as images),
// not to the node.
var HostExcludes = []string{
	"./proc/**", "./sys/**", "./dev/**", "./run/**", "./tmp/**", "./var/tmp/**",
	"./var/lib/containerd/**", "./var/lib/docker/**", "./var/lib/containers/**",
	"./var/lib/kubelet/pods/**", "./var/log/**", "./home/**", "./root/**",
	"./mnt/**", "./media/**", "./lost+found/**",
}

// ScanRoot catalogs the file system under root as a host's (a node's /,
// mounted read-only at root) and matches its packages. Paths resolve
// inside root, absolute symbolic links included; HostExcludes are skipped.
// Nothing under root is written.
func (e *Engine) ScanRoot(ctx context.Context, root string) (scan.Result, error) {
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return scan.Result{}, scan.Errorf("unsupported", "%s: the host's root file system is not mounted there (a read-only hostPath of /)", root)
	}
	snap, release, err := e.db.Acquire()
	if err != nil {
		return scan.Result{}, &scan.Error{Kind: "database", Err: err}
	}
	defer release()
	sctx, done := e.scanContext(ctx)
	defer done()
	src, err := syft.GetSource(sctx, root, syft.DefaultGetSourceConfig().WithSources("dir").WithBasePath(root).
		WithExcludeConfig(source.ExcludeConfig{Paths: HostExcludes}))
	if err != nil {
		return scan.Result{}, e.failure(ctx, "unsupported", fmt.Errorf("%s: the host's file system could not be read: %w", root, err))
	}
	defer src.Close()
	return e.match(ctx, sctx, snap, src, root)
}

// scanContext is a scan's context: it carries the license scanner and ends
// with ctx. Call done when the scan ends.
func (e *Engine) scanContext(ctx context.Context) (sctx context.Context, done func()) {
	sctx, cancel := context.WithCancel(e.base)
	stop := context.AfterFunc(ctx, cancel)
	return sctx, func() { stop(); cancel() }
}

// match catalogs src with syft and matches its packages in snap.
func (e *Engine) match(ctx, sctx context.Context, snap *vulndb.Snapshot, src source.Source, what string) (scan.Result, error) {
	sb, err := syft.CreateSBOM(sctx, src, e.sbom)
	if err != nil {
		return scan.Result{}, e.failure(ctx, "scanner", fmt.Errorf("%s: cataloging packages: %w", what, err))
	}

	pkgs := grypepkg.FromCollection(sb.Artifacts.Packages, sb.Relationships, grypepkg.SynthesisConfig{})
	pctx := grypepkg.Context{Distro: distro.FromRelease(sb.Artifacts.LinuxDistribution, nil)}
	// Grype's matchers read the distribution from each package, as Grype's
	// own provider sets it: without it, no OS package (dpkg, rpm, apk) is
	// matched against its distribution's advisories.
	for _, p := range pkgs {
		if p.Distro == nil {
			p.Distro = pctx.Distro
		}
	}
	m := &grype.VulnerabilityMatcher{
		VulnerabilityProvider: snap.Provider,
		Matchers:              matcher.NewDefaultMatchers(matcher.Config{}),
	}
	matches, _, err := m.FindMatchesContext(sctx, grypepkg.FromPtrs(pkgs), pctx)
	if err != nil {
		return scan.Result{}, e.failure(ctx, "scanner", fmt.Errorf("%s: matching vulnerabilities: %w", what, err))
	}
	res := scan.Result{
		Findings: findings(matches, snap.Published),
		Scanner: answer.Tool{Name: "grype", Version: e.version, DB: answer.Database{ID: snap.ID, Schema: snap.Schema, Built: snap.Built,
			AgeAtScan: time.Since(snap.Built).Round(time.Second).String()}},
		ScannedAt: time.Now().UTC(),
	}
	if d := sb.Artifacts.LinuxDistribution; d != nil {
		res.OS = d.PrettyName
	}
	return res, nil
}

// pull writes the image (the platform's image of an index) into a new OCI
// layout in the temporary directory, fetched through the registry client.
func (e *Engine) pull(ctx context.Context, ref name.Digest) (string, error) {
	opts := e.opts.Registry.Options(ctx, registry.Scan)
	if e.platform != nil {
		opts = append(opts, remote.WithPlatform(*e.platform))
	}
	im, err := remote.Image(ref, opts...)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "moat-scan-")
	if err != nil {
		return "", err
	}
	p, err := layout.Write(dir, empty.Index)
	if err == nil {
		err = p.AppendImage(im)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// readKind labels a failure to read an image: "unsupported" for a media
// type stereoscope or go-containerregistry cannot read (an artifact, not
// an image), else "pull".
func readKind(err error) string {
	if m := err.Error(); strings.Contains(m, "unsupported") || strings.Contains(m, "unexpected media type") {
		return "unsupported"
	}
	return "pull"
}

// failure labels err, or reports the timeout when ctx ended first.
func (e *Engine) failure(ctx context.Context, kind string, err error) error {
	if ctx.Err() != nil {
		return &scan.Error{Kind: "timeout", Err: fmt.Errorf("scan cancelled: %w", context.Cause(ctx))}
	}
	return &scan.Error{Kind: kind, Err: err}
}

// findings are the matches as findings, with each advisory's publication
// date as published says it.
func findings(ms *match.Matches, published func(id string) (time.Time, bool)) []answer.Finding {
	if ms == nil {
		return nil
	}
	seen := map[string]bool{}
	dates := map[string]string{} // advisory → published, looked up once
	var out []answer.Finding
	for _, m := range ms.Sorted() {
		f := answer.Finding{
			ID:        m.Vulnerability.ID,
			Severity:  severity(m.Vulnerability.Metadata),
			Package:   m.Package.Name,
			Installed: m.Package.Version,
			PURL:      m.Package.PURL,
		}
		if m.Vulnerability.Fix.State == vulnerability.FixStateFixed && len(m.Vulnerability.Fix.Versions) > 0 {
			f.Fixed = m.Vulnerability.Fix.Versions[0]
		}
		k := f.ID + "\x00" + f.Package + "\x00" + f.Installed
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, ok := dates[f.ID]; !ok {
			dates[f.ID] = ""
			if t, ok := published(f.ID); ok {
				dates[f.ID] = t.Format(time.RFC3339)
			}
		}
		f.Published = dates[f.ID]
		out = append(out, f)
	}
	return out
}

func severity(md *vulnerability.Metadata) string {
	if md == nil {
		return "unknown"
	}
	return scan.ParseSeverity(md.Severity)
}

func moduleVersion(path string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	return "unknown"
}
