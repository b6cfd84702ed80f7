// Package app wires the provider together: metrics, registry resolver,
// lookup service, scans, certificate reloader and server. `moat serve`,
// `moat scanner` and the test environment all build through it, so tests
// run what ships.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/moat-dev/moat/provider/internal/attest"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/firstseen"
	"github.com/moat-dev/moat/provider/internal/grypescan"
	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/nodes"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/resolve"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/scanremote"
	"github.com/moat-dev/moat/provider/internal/scans"
	"github.com/moat-dev/moat/provider/internal/server"
	"github.com/moat-dev/moat/provider/internal/shared"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
	"github.com/moat-dev/moat/provider/internal/vex"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// Scanner modes: the same names in the flags, the chart and the docs.
const (
	ScannerOff      = "off"
	ScannerEmbedded = "embedded"
	ScannerService  = "service"
)

// Config is everything `moat serve` is configured with, but addresses.
type Config struct {
	Server   server.Options
	Lookup   lookup.Options
	Registry registry.Options
	// Shared is the tier the replicas share; off while its URL is empty.
	Shared shared.Options
	Certs  mtls.Files
	Scan   ScanConfig
	// Signatures is off while its trust names no key and no identity.
	Signatures SignatureConfig
	// Nodes is off while its CA is empty.
	Nodes NodeConfig
}

// NodeConfig configures node reports (`moat node-scan`).
type NodeConfig struct {
	// CA signs the node scanners' client certificates; Addr is their
	// listener.
	CA, Addr string
	MaxAge   time.Duration
	// Policy judges node reports; grace periods do not apply to nodes.
	Policy scan.Policy
}

// SignatureConfig configures cosign signature checks.
type SignatureConfig struct {
	Trust  sigcheck.Trust
	Checks checks.Options
	// VerifiedTTL and UnverifiedTTL are the lifetimes of the two results.
	VerifiedTTL, UnverifiedTTL time.Duration
}

// Enabled reports whether any key or identity is trusted.
func (c SignatureConfig) Enabled() bool { return len(c.Trust.KeyFiles)+len(c.Trust.Identities) > 0 }

// ScanConfig says whether and where images are scanned.
type ScanConfig struct {
	// Mode is off, embedded (Grype in this process) or service (a `moat
	// scanner` service at RemoteURL).
	Mode  string
	Scans scans.Options
	// Wait is how long a lookup waits for a scan that is not done.
	Wait time.Duration
	// Engine configures the embedded scanner (and `moat scanner`).
	Engine EngineConfig
	// RemoteURL and RemoteTLS reach a scanner service.
	RemoteURL string
	RemoteTLS client.Files
	// VEXDir holds OpenVEX documents; VEXAttested also reads the images'
	// verified OpenVEX attestations.
	VEXDir      string
	VEXAttested bool
	// Attestations answers from the newest verified vuln attestation of an
	// image, signed under the signature trust; images without one go to
	// Mode's scanner (or are report_not_available when Mode is off).
	Attestations bool
}

// EngineConfig configures Grype and its database.
type EngineConfig struct {
	DB vulndb.Options
	// DBPath is a database file or archive to load at start (offline).
	DBPath string
	// DBUpdateInterval is how often DB.URL is checked for a newer database.
	DBUpdateInterval time.Duration
	Platform         string
}

// App is a wired provider.
type App struct {
	Server     *server.Server
	Service    *lookup.Service
	Metrics    *metrics.Metrics
	Scans      *checks.Service // nil when scanning is off
	Signatures *checks.Service // nil when no signature is trusted
	DB         *vulndb.DB      // the embedded scanner's database, or nil
	Shared     *shared.Store   // nil without one
	Nodes      *nodes.Book     // nil without node reports
	remote     *scanremote.Client
	vex        *vex.Source // nil without VEX statements
	log        *slog.Logger
	dbCfg      EngineConfig
}

// New wires a provider from cfg.
func New(cfg Config, log *slog.Logger) (_ *App, err error) {
	m := metrics.New()
	cfg.Registry.Log = log
	reg, err := registry.New(cfg.Registry, m)
	if err != nil {
		return nil, err
	}
	a := &App{Metrics: m, log: log, dbCfg: cfg.Scan.Engine}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	var store checks.Store
	if cfg.Shared.URL != "" {
		if a.Shared, err = shared.Open(cfg.Shared, m.Shared, log); err != nil {
			return nil, err
		}
		store = a.Shared
		cfg.Lookup.Shared = store
		cfg.Scan.Scans.Shared = store
		cfg.Signatures.Checks.Shared = store
	}
	if a.Service, err = lookup.New(cfg.Lookup, resolve.New(resolve.Options{}, reg, m), m, log); err != nil {
		return nil, err
	}
	svc := a.Service
	var scanner scan.Scanner
	switch cfg.Scan.Mode {
	case "", ScannerOff:
	case ScannerEmbedded:
		e, db, err := NewEngine(cfg.Scan.Engine, reg, log)
		if err != nil {
			return nil, err
		}
		scanner, a.DB = e, db
	case ScannerService:
		if cfg.Scan.RemoteURL == "" {
			return nil, fmt.Errorf("the remote scanner needs its URL")
		}
		conf, err := client.TLSConfig(cfg.Scan.RemoteTLS)
		if err != nil {
			return nil, fmt.Errorf("scanner client: %w", err)
		}
		a.remote = scanremote.NewClient(cfg.Scan.RemoteURL, client.New(conf, cfg.Scan.Scans.Workers, cfg.Scan.Scans.ScanTimeout))
		scanner = a.remote
	default:
		return nil, fmt.Errorf("scanner mode %q: want off, embedded or service", cfg.Scan.Mode)
	}
	var verifier *sigcheck.Verifier
	if cfg.Signatures.Enabled() {
		if verifier, err = sigcheck.New(sigcheck.Options{Trust: cfg.Signatures.Trust, Registry: reg}); err != nil {
			return nil, err
		}
	}
	if cfg.Scan.Attestations {
		if verifier == nil {
			return nil, fmt.Errorf("scan attestations are verified against the signature trust: configure signature keys or identities")
		}
		scanner = &attest.Source{Verifier: verifier, Fallback: scanner}
	}
	var cs []lookup.Checks
	if scanner != nil {
		opts := cfg.Scan.Scans
		if cfg.Scan.VEXDir != "" || cfg.Scan.VEXAttested {
			vo := vex.Options{Dir: cfg.Scan.VEXDir}
			if cfg.Scan.VEXAttested {
				if verifier == nil {
					return nil, fmt.Errorf("VEX attestations are verified against the signature trust: configure signature keys or identities")
				}
				vo.Attestations = verifier
			}
			statements, err := vex.Load(vo)
			if err != nil {
				return nil, err
			}
			log.Info("VEX statements in use", "files", statements.Files(), "attestations", cfg.Scan.VEXAttested)
			opts.VEX, a.vex = statements, statements
		}
		opts.FirstSeen = firstseen.New(opts.CacheSize, opts.Shared)
		a.Scans, err = scans.New(opts, scanner, m, log)
		if err != nil {
			return nil, err
		}
		cs = append(cs, a.Scans)
	}
	if verifier != nil {
		a.Signatures, err = checks.New("signature check", cfg.Signatures.Checks,
			sigcheck.Check{V: verifier, VerifiedTTL: cfg.Signatures.VerifiedTTL, UnverifiedTTL: cfg.Signatures.UnverifiedTTL},
			m.Signatures, log)
		if err != nil {
			return nil, err
		}
		cs = append(cs, a.Signatures)
	}
	if len(cs) > 0 {
		svc.AddChecks(cfg.Scan.Wait, cs...)
	}
	certs := mtls.NewReloader(cfg.Certs, log, m)
	a.Server = server.New(cfg.Server, svc, certs, m, log)
	if cfg.Nodes.CA != "" {
		policy := cfg.Nodes.Policy
		policy.Grace = nil
		var store checks.Store
		if a.Shared != nil {
			store = a.Shared
		}
		book, err := nodes.New(nodes.Options{Policy: policy, MaxAge: cfg.Nodes.MaxAge, Shared: store})
		if err != nil {
			return nil, err
		}
		a.Nodes = book
		nodeCerts := mtls.NewReloader(mtls.Files{Cert: cfg.Certs.Cert, Key: cfg.Certs.Key, ClientCA: cfg.Nodes.CA}, log, m)
		a.Server.ServeNodes(book, nodes.Handler(book, log), cfg.Nodes.Addr, nodeCerts)
	}
	return a, nil
}

// vexReloadInterval is how often --vex-dir is read again: a ConfigMap
// update takes about a minute to reach the pod's files anyway.
const vexReloadInterval = 30 * time.Second

// Run serves until ctx ends, keeping the database up to date meanwhile.
func (a *App) Run(ctx context.Context, addr, opsAddr string) error {
	defer a.Close()
	if a.DB != nil {
		go KeepDB(ctx, a.DB, a.dbCfg, a.log)
	}
	if a.vex != nil {
		go a.vex.Watch(ctx, vexReloadInterval, a.log)
	}
	if a.remote != nil {
		// Before serving, so that answers after a restart find the reports
		// of the scanner's database at once; an unreachable scanner costs
		// no more than a few seconds here.
		first, cancel := context.WithTimeout(ctx, 3*time.Second)
		for a.remote.Database() == "" && first.Err() == nil {
			if err := a.remote.Refresh(first); err != nil || a.remote.Database() == "" {
				select {
				case <-first.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
		if a.remote.Database() == "" {
			a.log.Warn("the scanner service does not say which database it scans with yet; reports are shared once it does")
		}
		cancel()
		go a.remote.Watch(ctx, scannerWatch)
	}
	return a.Server.Run(ctx, addr, opsAddr)
}

// scannerWatch is how often a provider asks the scanner service which
// database it scans with (scans tell it too).
const scannerWatch = 30 * time.Second

// Close stops the scans and closes the database.
func (a *App) Close() {
	if a.Scans != nil {
		a.Scans.Close()
	}
	if a.Signatures != nil {
		a.Signatures.Close()
	}
	if a.DB != nil {
		a.DB.Close()
	}
	if a.Shared != nil {
		_ = a.Shared.Close()
	}
}

// NewEngine builds the Grype engine with its (still empty) database,
// pulling through reg.
func NewEngine(cfg EngineConfig, reg *registry.Client, log *slog.Logger) (*grypescan.Engine, *vulndb.DB, error) {
	db, err := vulndb.New(cfg.DB, log)
	if err != nil {
		return nil, nil, err
	}
	e, err := grypescan.New(grypescan.Options{Registry: reg, Platform: cfg.Platform}, db)
	if err != nil {
		return nil, nil, err
	}
	return e, db, nil
}

// KeepDB loads the database from cfg.DBPath, then downloads from
// cfg.DB.URL and checks it for updates every cfg.DBUpdateInterval, until
// ctx ends. Failures are logged; scans answer scan_failed with the reason
// while there is no usable database.
func KeepDB(ctx context.Context, db *vulndb.DB, cfg EngineConfig, log *slog.Logger) {
	var loaded os.FileInfo // the file as last loaded
	if cfg.DBPath != "" {
		loaded, _ = os.Stat(cfg.DBPath)
		if err := db.Load(cfg.DBPath); err != nil {
			log.Error("vulnerability database not loaded; scans fail until one is", "error", err.Error())
		}
	}
	if cfg.DB.URL == "" && cfg.DBPath == "" {
		return
	}
	every := cfg.DBUpdateInterval
	if every <= 0 {
		every = 6 * time.Hour
	}
	for {
		if cfg.DB.URL != "" {
			if updated, err := db.Update(); err != nil {
				log.Error("vulnerability database update failed", "url", cfg.DB.URL, "error", err.Error())
			} else if updated {
				log.Info("vulnerability database updated", "id", db.Current())
			}
		} else if st, err := os.Stat(cfg.DBPath); err == nil && changed(loaded, st) {
			// An offline mirror replaced the file (a CronJob, a volume sync).
			loaded = st
			if err := db.Load(cfg.DBPath); err != nil {
				log.Error("the changed vulnerability database was not loaded; the previous one stays in use", "path", cfg.DBPath, "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// changed reports whether a database file is not the one last loaded.
func changed(last, now os.FileInfo) bool {
	return last == nil || !now.ModTime().Equal(last.ModTime()) || now.Size() != last.Size()
}

// Scanner wires `moat scanner`: the engine behind the scanner service's
// handler, served with mutual TLS like the provider.
type Scanner struct {
	Server *server.Server
	DB     *vulndb.DB
	cfg    EngineConfig
	log    *slog.Logger
}

// NewScanner wires a scanner service.
func NewScanner(srv server.Options, eng EngineConfig, regOpts registry.Options, workers int, certs mtls.Files, log *slog.Logger) (*Scanner, error) {
	m := metrics.New()
	regOpts.Log = log
	reg, err := registry.New(regOpts, m)
	if err != nil {
		return nil, err
	}
	e, db, err := NewEngine(eng, reg, log)
	if err != nil {
		return nil, err
	}
	ready := func() error {
		if db.Current() == "" {
			return fmt.Errorf("no vulnerability database loaded yet")
		}
		return nil
	}
	var h http.Handler = scanremote.Handler(e, workers, log)
	return &Scanner{Server: server.NewService(srv, h, ready, mtls.NewReloader(certs, log, m), m, log), DB: db, cfg: eng, log: log}, nil
}

// Run serves until ctx ends.
func (s *Scanner) Run(ctx context.Context, addr, opsAddr string) error {
	defer s.DB.Close()
	go KeepDB(ctx, s.DB, s.cfg, s.log)
	return s.Server.Run(ctx, addr, opsAddr)
}
