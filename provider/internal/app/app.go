// Package app wires the provider together: metrics, registry resolver,
// lookup service, certificate reloader and server. `moat serve` and the
// test environment both build through it, so tests run what ships.
package app

import (
	"log/slog"

	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/resolve"
	"github.com/moat-dev/moat/provider/internal/server"
)

// Config is everything `moat serve` is configured with, but addresses.
type Config struct {
	Server   server.Options
	Lookup   lookup.Options
	Registry resolve.Options
	Certs    mtls.Files
}

// App is a wired provider.
type App struct {
	Server  *server.Server
	Service *lookup.Service
	Metrics *metrics.Metrics
}

// New wires a provider from cfg.
func New(cfg Config, log *slog.Logger) (*App, error) {
	m := metrics.New()
	svc, err := lookup.New(cfg.Lookup, resolve.New(cfg.Registry, m), m, log)
	if err != nil {
		return nil, err
	}
	certs := mtls.NewReloader(cfg.Certs, log, m)
	return &App{Server: server.New(cfg.Server, svc, certs, m, log), Service: svc, Metrics: m}, nil
}
