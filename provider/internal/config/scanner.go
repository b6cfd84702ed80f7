package config

import (
	"flag"
	"time"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/server"
)

// Scanner is every setting of `moat scanner`.
type Scanner struct {
	r rules
	Server
	Workers         int
	Registry        Registry
	ShutdownTimeout time.Duration
	Log             Log
	Engine          Engine
}

// NewScanner registers every setting of `moat scanner` on fs, with its
// default.
func NewScanner(fs *flag.FlagSet) *Scanner {
	s := &Scanner{r: rules{fs: fs}}
	r := &s.r
	s.Server.register(r, "address of POST /v1/scan (HTTPS, TLS 1.3, client certificate required)",
		"address of /metrics, /healthz and /readyz (plain HTTP; ready once a database is loaded)",
		"CA that signs the provider's client certificate")
	r.count(&s.Workers, "workers", 2, "", "scans run at once; more requests wait for a worker")
	s.Registry.register(r)
	r.duration(&s.ShutdownTimeout, "shutdown-timeout", 25*time.Second, "", "longest to wait for running scans on shutdown")
	s.Log.register(r)
	s.Engine.register(r)
	return s
}

// Load applies the --config file under the command line and checks every
// setting.
func (s *Scanner) Load() error {
	if err := s.Server.load(s.r.fs); err != nil {
		return err
	}
	return s.r.validate()
}

// ServerOptions, RegistryOptions, Certs and EngineConfig configure
// app.NewScanner.
func (s *Scanner) ServerOptions() server.Options {
	return server.Options{CertReloadInterval: s.TLS.ReloadInterval, ShutdownTimeout: s.ShutdownTimeout}
}

// RegistryOptions are the registry client's options; version goes into the
// user agent.
func (s *Scanner) RegistryOptions(version string) registry.Options {
	return s.Registry.options(version)
}

// Certs are the server's certificate files.
func (s *Scanner) Certs() mtls.Files {
	return mtls.Files{Cert: s.TLS.Cert, Key: s.TLS.Key, ClientCA: s.TLS.ClientCA}
}

// EngineConfig configures the scanner's engine.
func (s *Scanner) EngineConfig() app.EngineConfig { return s.Engine.config() }
