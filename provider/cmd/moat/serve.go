package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/protocol"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/server"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr, "--tls-cert FILE --tls-key FILE --client-ca FILE [flags]")
	var (
		configFile   = fs.String("config", "", "YAML file of settings named like these flags; flags given on the command line win")
		addr         = fs.String("addr", ":8443", "address of the external-data endpoints (HTTPS, TLS 1.3, client certificate required)")
		opsAddr      = fs.String("metrics-addr", ":8080", "address of /metrics, /healthz and /readyz (plain HTTP)")
		tlsCert      = fs.String("tls-cert", "", "server certificate (PEM); reloaded when the file changes")
		tlsKey       = fs.String("tls-key", "", "server private key (PEM); reloaded when the file changes")
		clientCA     = fs.String("client-ca", "", "CA that signs the client certificate Gatekeeper presents (ca.crt of gatekeeper-webhook-server-cert); reloaded when the file changes")
		skipVerify   = fs.Bool("insecure-skip-client-verify", false, "DEVELOPMENT ONLY: accept clients without a certificate")
		reloadEvery  = fs.Duration("cert-reload-interval", 10*time.Second, "how often certificate files are checked for changes")
		maxBody      = fs.Int64("max-request-bytes", 1<<20, "largest request body accepted")
		maxKeys      = fs.Int("max-keys", 2000, "most keys accepted in one request")
		valDeadline  = fs.Duration("validate-deadline", 2*time.Second, "longest /validate waits for registries; keep it below the validation Provider's spec.timeout")
		mutDeadline  = fs.Duration("mutate-deadline", 800*time.Millisecond, "longest /mutate waits for registries; keep it below the mutation Provider's spec.timeout")
		cacheSize    = fs.Int("cache-size", 100000, "most answers kept in the cache (entries)")
		digestTTL    = fs.Duration("digest-ttl", 5*time.Minute, "how long a resolved digest is served before the registry is asked again")
		errorTTL     = fs.Duration("error-ttl", 10*time.Second, "how long a failed resolution is served before the next try")
		swr          = fs.Duration("stale-while-revalidate", 0, "serve an expired digest this much longer while a refresh runs (0: off)")
		resolveLimit = fs.Duration("resolve-timeout", 10*time.Second, "longest one digest resolution may take, retries included; it may outlive the request")
		perHost      = fs.Int("registry-concurrency", 32, "most requests in flight to one registry host")
		regConfig    = fs.String("registry-config", "", "docker config file with registry credentials (config.json or a mounted .dockerconfigjson)")
		shutdownWait = fs.Duration("shutdown-delay", 0, "after SIGTERM, keep serving (not ready) this long before closing listeners")
		shutdownMax  = fs.Duration("shutdown-timeout", 25*time.Second, "longest to wait for in-flight requests on shutdown")
		logFormat    = fs.String("log-format", "json", "log format: json or text")
		logLevel     = fs.String("log-level", "info", "log level: debug, info, warn or error")
	)
	scanCfg := scanFlags(fs)
	sigCfg := signatureFlags(fs)
	var insecureRegs listFlag
	fs.Var(&insecureRegs, "insecure-registries", "comma-separated registry hosts (host:port) that may be reached over plain HTTP; no other host is")
	if err := parseServerFlags(fs, args, configFile, tlsCert, tlsKey, clientCA); err != nil {
		return err
	}
	if *maxKeys <= 0 || *maxBody <= 0 || *cacheSize <= 0 || *perHost <= 0 {
		return usageError{"--max-keys, --max-request-bytes, --cache-size and --registry-concurrency must be positive"}
	}
	sc, err := scanCfg()
	if err != nil {
		return err
	}
	sigs, err := sigCfg()
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return usageError{err.Error()}
	}

	a, err := app.New(app.Config{
		Server: server.Options{
			Limits:             protocol.Limits{MaxBodyBytes: *maxBody, MaxKeys: *maxKeys},
			ValidateDeadline:   *valDeadline,
			MutateDeadline:     *mutDeadline,
			SkipClientVerify:   *skipVerify,
			CertReloadInterval: *reloadEvery,
			ShutdownDelay:      *shutdownWait,
			ShutdownTimeout:    *shutdownMax,
		},
		Lookup: lookup.Options{
			CacheSize:            *cacheSize,
			DigestTTL:            *digestTTL,
			ErrorTTL:             *errorTTL,
			StaleWhileRevalidate: *swr,
			ResolveTimeout:       *resolveLimit,
		},
		Registry: registry.Options{
			PerHostConcurrency: *perHost,
			RegistryConfig:     *regConfig,
			InsecureRegistries: insecureRegs,
			UserAgent:          "moat/" + version,
		},
		Certs:      mtls.Files{Cert: *tlsCert, Key: *tlsKey, ClientCA: *clientCA},
		Scan:       sc,
		Signatures: sigs,
	}, log)
	if err != nil {
		return err
	}
	log.Info("moat starting", "version", version, "scanner", sc.Mode)
	if err := a.Run(ctx, *addr, *opsAddr); err != nil {
		return err
	}
	log.Info("moat stopped")
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}
