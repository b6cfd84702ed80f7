package main

import (
	"context"
	"io"
	"time"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/server"
)

func runScanner(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("scanner", stderr, "--tls-cert FILE --tls-key FILE --client-ca FILE [--db-path FILE | --db-url URL] [flags]")
	var (
		configFile  = fs.String("config", "", "YAML file of settings named like these flags; flags given on the command line win")
		addr        = fs.String("addr", ":8443", "address of POST /v1/scan (HTTPS, TLS 1.3, client certificate required)")
		opsAddr     = fs.String("metrics-addr", ":8080", "address of /metrics, /healthz and /readyz (plain HTTP; ready once a database is loaded)")
		tlsCert     = fs.String("tls-cert", "", "server certificate (PEM); reloaded when the file changes")
		tlsKey      = fs.String("tls-key", "", "server private key (PEM); reloaded when the file changes")
		clientCA    = fs.String("client-ca", "", "CA that signs the provider's client certificate")
		reloadEvery = fs.Duration("cert-reload-interval", 10*time.Second, "how often certificate files are checked for changes")
		workers     = fs.Int("workers", 2, "scans run at once; more requests wait for a worker")
		regConfig   = fs.String("registry-config", "", "docker config file with registry credentials (config.json or a mounted .dockerconfigjson)")
		shutdownMax = fs.Duration("shutdown-timeout", 25*time.Second, "longest to wait for running scans on shutdown")
		logFormat   = fs.String("log-format", "json", "log format: json or text")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn or error")
	)
	eng := engineFlags(fs)
	var insecureRegs listFlag
	fs.Var(&insecureRegs, "insecure-registries", "comma-separated registry hosts (host:port) that may be reached over plain HTTP; no other host is")
	if err := parseServerFlags(fs, args, configFile, tlsCert, tlsKey, clientCA); err != nil {
		return err
	}
	if *workers < 1 {
		return usageError{"--workers must be positive"}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return usageError{err.Error()}
	}
	s, err := app.NewScanner(
		server.Options{CertReloadInterval: *reloadEvery, ShutdownTimeout: *shutdownMax},
		eng(),
		registry.Options{PerHostConcurrency: 32, RegistryConfig: *regConfig, InsecureRegistries: insecureRegs, UserAgent: "moat/" + version},
		*workers, mtls.Files{Cert: *tlsCert, Key: *tlsKey, ClientCA: *clientCA}, log)
	if err != nil {
		return err
	}
	log.Info("moat scanner starting", "version", version)
	return s.Run(ctx, *addr, *opsAddr)
}
