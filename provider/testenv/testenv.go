// Package testenv starts a whole provider on loopback for tests and
// benchmarks: a real in-memory OCI registry, development certificates, and
// `moat serve`'s stack (resolver, cache, mutual-TLS server) on free ports.
package testenv

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/certs"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/config"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/nodes"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// Env is a running provider and its registry.
type Env struct {
	// Registry is the in-memory registry; RegistryHost is its "127.0.0.1:port".
	Registry     *devregistry.Registry
	RegistryHost string
	// CertDir holds ca.crt, tls.crt, tls.key, client.crt, client.key.
	CertDir string
	Certs   *certs.DevSet
	// URL is the provider's base URL ("https://127.0.0.1:port").
	URL     string
	OpsURL  string
	Metrics *metrics.Metrics
	Service *lookup.Service
	// Log receives the provider's logs (JSON lines).
	Log *SyncBuffer
	// Scans and DB are set when the Config scans (ScanDefaults).
	Scans *checks.Service
	DB    *vulndb.DB
	// ReportURL is PUT /v1/node-report when the Config takes node reports
	// (WithNodeReports); NodeClient reaches it.
	ReportURL string

	registry *httptest.Server
}

// Config adjusts the provider the Env starts; Certs is filled in by Start.
type Config = app.Config

// Defaults are the `moat serve` defaults (package config), with a short
// certificate reload interval and shutdown.
func Defaults() Config {
	c := config.ServeDefaults().App("test")
	c.Server.CertReloadInterval = 50 * time.Millisecond
	c.Server.ShutdownTimeout = 5 * time.Second
	return c
}

// ScanDefaults is Defaults with the embedded scanner on the sample
// database (package samples), which Start writes and loads before serving.
func ScanDefaults() Config {
	c := Defaults()
	c.Scan.Mode = app.ScannerEmbedded
	c.Scan.Engine.DB.Dir = "" // Start gives each Env its own
	return c
}

// Start starts a registry and a provider; both stop when tb ends.
func Start(tb testing.TB, cfg Config) *Env {
	tb.Helper()
	reg := devregistry.New()
	rs := httptest.NewServer(reg)
	tb.Cleanup(rs.Close)
	regHost := strings.TrimPrefix(rs.URL, "http://")

	dir := tb.TempDir()
	set, err := certs.NewDevSet(nil, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	if err := set.Write(dir); err != nil {
		tb.Fatal(err)
	}

	logBuf := &SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Registry.InsecureRegistries = append(cfg.Registry.InsecureRegistries, regHost)
	cfg.Certs = mtls.Files{
		Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), ClientCA: filepath.Join(dir, "ca.crt"),
	}
	if cfg.Scan.Mode == app.ScannerEmbedded {
		if cfg.Scan.Engine.DB.Dir == "" {
			cfg.Scan.Engine.DB.Dir = filepath.Join(dir, "vulndb")
		}
		if cfg.Scan.Engine.DBPath == "" {
			cfg.Scan.Engine.DBPath = filepath.Join(dir, "vulnerability.db")
			if err := samples.WriteDB(cfg.Scan.Engine.DBPath); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if cfg.Nodes.CA == NodeReports {
		cfg.Nodes.CA = filepath.Join(dir, "node-ca.crt")
	}
	a, err := app.New(cfg, log)
	if err != nil {
		tb.Fatal(err)
	}
	var reportURL string
	if cfg.Nodes.CA != "" {
		rl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		a.Server.ReportsListener(rl)
		reportURL = "https://" + rl.Addr().String() + nodes.ReportPath
	}
	tb.Cleanup(a.Close)
	if a.DB != nil {
		// Loaded before serving, as KeepDB's first step does.
		if err := a.DB.Load(cfg.Scan.Engine.DBPath); err != nil {
			log.Error("vulnerability database not loaded; scans fail until one is", "error", err.Error())
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Server.Serve(ctx, ln, opsLn) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("provider shutdown: %v", err)
		}
	})
	e := &Env{
		Registry: reg, RegistryHost: regHost, CertDir: dir, Certs: set,
		URL: "https://" + ln.Addr().String(), OpsURL: "http://" + opsLn.Addr().String(),
		Metrics: a.Metrics, Service: a.Service, Log: logBuf, Scans: a.Scans, DB: a.DB, registry: rs, ReportURL: reportURL,
	}
	e.waitReady(tb)
	return e
}

func (e *Env) waitReady(tb testing.TB) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(e.OpsURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatal("provider not ready after 10s")
}

// NodeReports, as Config.Nodes.CA, makes Start take node reports with the
// dev set's node-scan CA (WithNodeReports).
const NodeReports = "testenv:node-ca"

// WithNodeReports is cfg taking node reports from `moat node-scan`, served
// at most maxAge old.
func WithNodeReports(cfg Config, maxAge time.Duration) Config {
	cfg.Nodes.CA, cfg.Nodes.MaxAge = NodeReports, maxAge
	return cfg
}

// NodeClient is an HTTP client with the node scanner's client certificate.
func (e *Env) NodeClient(tb testing.TB) *http.Client {
	tb.Helper()
	c, err := client.TLSConfig(client.Files{CA: e.Path("ca.crt"), Cert: e.Path("node-client.crt"), Key: e.Path("node-client.key")})
	if err != nil {
		tb.Fatal(err)
	}
	return client.New(c, 2, 30*time.Second)
}

// Path is a file in CertDir.
func (e *Env) Path(name string) string { return filepath.Join(e.CertDir, name) }

// ClientTLS is the TLS configuration of a client holding the dev client
// certificate, as Gatekeeper would.
func (e *Env) ClientTLS(tb testing.TB) *tls.Config {
	tb.Helper()
	c, err := client.TLSConfig(client.Files{CA: e.Path("ca.crt"), Cert: e.Path("client.crt"), Key: e.Path("client.key")})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Client is an HTTP client with the dev client certificate.
func (e *Env) Client(tb testing.TB) *http.Client {
	return client.New(e.ClientTLS(tb), 8, 30*time.Second)
}

// Push pushes a random image to repoTag ("demo/app:v1") in the registry
// and returns the full reference and digest.
func (e *Env) Push(tb testing.TB, repoTag string) (ref, digest string) {
	tb.Helper()
	ref = e.RegistryHost + "/" + repoTag
	d, err := devregistry.Push(context.Background(), ref)
	if err != nil {
		tb.Fatal(err)
	}
	return ref, d
}

// PushImage pushes img to repoTag and returns the full reference and digest.
func (e *Env) PushImage(tb testing.TB, repoTag string, img v1.Image) (ref, digest string) {
	tb.Helper()
	ref = e.RegistryHost + "/" + repoTag
	d, err := devregistry.Write(context.Background(), ref, img)
	if err != nil {
		tb.Fatal(err)
	}
	return ref, d.DigestStr()
}

// PushSample pushes the sample image called sample (samples.Images,
// "unreadable" or "artifact") to repoTag.
func (e *Env) PushSample(tb testing.TB, repoTag, sample string) (ref, digest string) {
	tb.Helper()
	return PushSampleTo(tb, e.RegistryHost, repoTag, sample)
}

// PushSampleTo pushes the sample image called sample to host/repoTag and
// returns the full reference and digest.
func PushSampleTo(tb testing.TB, host, repoTag, sample string) (ref, digest string) {
	tb.Helper()
	var img v1.Image
	var err error
	switch sample {
	case "unreadable":
		img, err = samples.Unreadable()
	case "artifact":
		img, err = samples.Artifact()
	default:
		pkgs, ok := samples.Images[sample]
		if !ok {
			tb.Fatalf("no sample image %q", sample)
		}
		img, err = samples.Image(pkgs)
	}
	if err != nil {
		tb.Fatal(err)
	}
	ref = host + "/" + repoTag
	d, err := devregistry.Write(context.Background(), ref, img)
	if err != nil {
		tb.Fatal(err)
	}
	return ref, d.DigestStr()
}

// StopRegistry closes the registry and every connection to it, as if it
// went away.
func (e *Env) StopRegistry() {
	e.registry.CloseClientConnections()
	e.registry.Close()
}

// SyncBuffer is an io.Writer safe for concurrent use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// String is everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// StartRegistry starts a bare in-memory registry (no provider), stopped
// when tb ends, and returns its "127.0.0.1:port".
func StartRegistry(tb testing.TB) string {
	tb.Helper()
	return StartRegistryWith(tb, nil)
}

// StartRegistryWith is StartRegistry with the registry's handler wrapped
// by wrap (nil: as is), for tests that hold or fail some requests.
func StartRegistryWith(tb testing.TB, wrap func(http.Handler) http.Handler) string {
	tb.Helper()
	var h http.Handler = devregistry.New()
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// PushRandom pushes a random image to host/repoTag and returns its digest
// reference.
func PushRandom(tb testing.TB, host, repoTag string) name.Digest {
	tb.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := devregistry.Write(context.Background(), host+"/"+repoTag, img)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// RegistryClient is a registry client that may reach the listed hosts (the
// registries tests start) over plain HTTP, counting into its own metrics.
func RegistryClient(tb testing.TB, insecure ...string) *registry.Client {
	tb.Helper()
	c, err := registry.New(registry.Options{PerHostConcurrency: 32, InsecureRegistries: insecure}, metrics.New())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// WriteSampleDB writes the sample vulnerability database to path; with
// later, also the advisory a later database adds (samples.Later: the clean
// sample becomes critical). Env.DB.Load swaps it in.
func WriteSampleDB(path string, later bool) error {
	vulns := samples.Vulns
	if later {
		vulns = samples.WithLater()
	}
	return samples.WriteDBOf(path, vulns)
}

// LaterID is the ID of the advisory WriteSampleDB adds with later.
var LaterID = samples.Later.ID
