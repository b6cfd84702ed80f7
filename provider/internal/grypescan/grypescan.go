// Package grypescan is the embedded scanner: syft catalogs an image
// straight from its registry (no container engine) and Grype matches the
// packages against the vulnerability database of a vulndb.DB.
package grypescan

import (
	"context"
	"fmt"
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
	"github.com/anchore/stereoscope/pkg/image"
	"github.com/anchore/syft/syft"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// Options configure an Engine.
type Options struct {
	// Keychain gives registry credentials: the same one digest resolution
	// uses.
	Keychain authn.Keychain
	// Insecure says whether a registry host is reached over plain HTTP.
	Insecure func(host string) bool
	// Platform picks the image of a multi-platform index; empty means
	// linux/amd64 for an index and no check for a single image (whose
	// config may not name a platform at all).
	Platform string
}

// Engine scans images. It is safe for concurrent use.
type Engine struct {
	opts Options
	db   *vulndb.DB
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
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Insecure == nil {
		opts.Insecure = func(string) bool { return false }
	}
	return &Engine{opts: opts, db: db, base: base, sbom: cfg, version: moduleVersion("github.com/anchore/grype")}, nil
}

// Database identifies the database scans use now.
func (e *Engine) Database() string { return e.db.Current() }

// Scan catalogs image (by digest) and matches its packages.
func (e *Engine) Scan(ctx context.Context, img string) (scan.Result, error) {
	ref, err := name.NewDigest(img, name.StrictValidation)
	if err != nil {
		return scan.Result{}, scan.Errorf("unsupported", "%s: scans need a digest reference: %v", img, err)
	}
	snap, release, err := e.db.Acquire()
	if err != nil {
		return scan.Result{}, &scan.Error{Kind: "database", Err: err}
	}
	defer release()

	// The scan's context carries the license scanner and ends with ctx.
	sctx, cancel := context.WithCancel(e.base)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()

	var platform *image.Platform
	if e.opts.Platform != "" {
		if platform, err = image.NewPlatform(e.opts.Platform); err != nil {
			return scan.Result{}, scan.Errorf("scanner", "platform %q: %v", e.opts.Platform, err)
		}
	}
	reg := &image.RegistryOptions{Keychain: e.opts.Keychain, InsecureUseHTTP: e.opts.Insecure(ref.RegistryStr())}
	src, err := syft.GetSource(sctx, ref.String(), syft.DefaultGetSourceConfig().
		WithSources("registry").WithRegistryOptions(reg).WithPlatform(platform))
	if err != nil {
		kind := "pull"
		if strings.Contains(err.Error(), "unsupported") { // a media type stereoscope cannot read (an artifact)
			kind = "unsupported"
		}
		return scan.Result{}, e.failure(ctx, kind, fmt.Errorf("%s: the image could not be read from its registry: %w", img, err))
	}
	defer src.Close()
	sb, err := syft.CreateSBOM(sctx, src, e.sbom)
	if err != nil {
		return scan.Result{}, e.failure(ctx, "scanner", fmt.Errorf("%s: cataloging packages: %w", img, err))
	}

	pkgs := grypepkg.FromCollection(sb.Artifacts.Packages, sb.Relationships, grypepkg.SynthesisConfig{})
	pctx := grypepkg.Context{Distro: distro.FromRelease(sb.Artifacts.LinuxDistribution, nil)}
	m := &grype.VulnerabilityMatcher{
		VulnerabilityProvider: snap.Provider,
		Matchers:              matcher.NewDefaultMatchers(matcher.Config{}),
	}
	matches, _, err := m.FindMatchesContext(sctx, grypepkg.FromPtrs(pkgs), pctx)
	if err != nil {
		return scan.Result{}, e.failure(ctx, "scanner", fmt.Errorf("%s: matching vulnerabilities: %w", img, err))
	}
	return scan.Result{
		Findings: findings(matches),
		Scanner: answer.Tool{Name: "grype", Version: e.version, DB: answer.Database{ID: snap.ID, Schema: snap.Schema, Built: snap.Built,
			AgeAtScan: time.Since(snap.Built).Round(time.Second).String()}},
		ScannedAt: time.Now().UTC(),
	}, nil
}

// failure labels err, or reports the timeout when ctx ended first.
func (e *Engine) failure(ctx context.Context, kind string, err error) error {
	if ctx.Err() != nil {
		return &scan.Error{Kind: "timeout", Err: fmt.Errorf("scan cancelled: %w", context.Cause(ctx))}
	}
	return &scan.Error{Kind: kind, Err: err}
}

func findings(ms *match.Matches) []answer.Finding {
	if ms == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []answer.Finding
	for _, m := range ms.Sorted() {
		f := answer.Finding{
			ID:        m.Vulnerability.ID,
			Severity:  severity(m.Vulnerability.Metadata),
			Package:   m.Package.Name,
			Installed: m.Package.Version,
		}
		if m.Vulnerability.Fix.State == vulnerability.FixStateFixed && len(m.Vulnerability.Fix.Versions) > 0 {
			f.Fixed = m.Vulnerability.Fix.Versions[0]
		}
		k := f.ID + "\x00" + f.Package + "\x00" + f.Installed
		if seen[k] {
			continue
		}
		seen[k] = true
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
