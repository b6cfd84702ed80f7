// Package config is every setting of `moat serve` and `moat scanner` in one
// place. Each setting is declared once, here: its flag name (also its key
// in a --config file), its default, its help, and the rule it must meet,
// including what 0 means where 0 is allowed. Settings are checked once, at
// start, and a broken one is refused with a message naming its flag. The
// flag reference (docs/reference/flags.md) is generated from the help this
// package writes, the test environment starts from these defaults, and the
// chart's values are checked against them.
package config

import (
	"flag"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/shared"
)

// UsageError is a setting that cannot be used: its message names the flag.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// rules registers flags and remembers the check of each.
type rules struct {
	fs     *flag.FlagSet
	checks []func() error
	ruled  map[string]bool // flags with a rule
}

func (r *rules) add(name string, check func() error) {
	if r.ruled == nil {
		r.ruled = map[string]bool{}
	}
	r.ruled[name] = true
	r.checks = append(r.checks, check)
}

// duration registers a duration flag. zero says what 0 means; empty means
// 0 is refused (the duration must be positive). Negative is always refused.
func (r *rules) duration(p *time.Duration, name string, def time.Duration, zero, usage string) {
	usage = withZero(usage, zero)
	r.fs.DurationVar(p, name, def, usage)
	r.add(name, nonNegative(p, name, zero, usage))
}

// count registers an int flag with the same rule for 0 as duration.
func (r *rules) count(p *int, name string, def int, zero, usage string) {
	usage = withZero(usage, zero)
	r.fs.IntVar(p, name, def, usage)
	r.add(name, nonNegative(p, name, zero, usage))
}

func withZero(usage, zero string) string {
	if zero != "" {
		return usage + "; 0: " + zero
	}
	return usage
}

// nonNegative is the rule of a duration or count: never negative, and 0
// only where zero says what it means.
func nonNegative[T int | time.Duration](p *T, name, zero, usage string) func() error {
	return func() error {
		switch {
		case *p < 0:
			return usagef("--%s %v: must not be negative", name, *p)
		case *p == 0 && zero == "":
			return usagef("--%s 0: must be positive (%s)", name, usage)
		}
		return nil
	}
}

// oneOf registers a string flag that must be one of values.
func (r *rules) oneOf(p *string, name, def string, values []string, usage string) {
	r.fs.StringVar(p, name, def, usage+" ("+strings.Join(values, ", ")+")")
	r.add(name, func() error {
		for _, v := range values {
			if *p == v {
				return nil
			}
		}
		return usagef("--%s %q: want %s", name, *p, strings.Join(values, ", "))
	})
}

func (r *rules) validate() error {
	var msgs []string
	for _, c := range r.checks {
		if err := c(); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		return &UsageError{Msg: strings.Join(msgs, "; ")}
	}
	return nil
}

// Server is what both servers (serve, scanner) take: the config file,
// --check-config, the two addresses and the certificates.
type Server struct {
	File        string // --config
	CheckOnly   bool   // --check-config
	Addr        string
	MetricsAddr string
	TLS         TLS
}

func (s *Server) register(r *rules, addr, metrics, clientCA string) {
	r.fs.StringVar(&s.File, "config", "", "YAML file of settings named like these flags; flags given on the command line win")
	r.fs.BoolVar(&s.CheckOnly, "check-config", false, "check the settings, print them, and exit without serving")
	r.fs.StringVar(&s.Addr, "addr", ":8443", addr)
	r.fs.StringVar(&s.MetricsAddr, "metrics-addr", ":8080", metrics)
	s.TLS.register(r, clientCA)
}

// load applies the config file under the command line (which wins) and
// checks what every server needs.
func (s *Server) load(fs *flag.FlagSet) error {
	if s.File != "" {
		if err := applyFile(fs, s.File); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if s.TLS.Cert == "" || s.TLS.Key == "" || s.TLS.ClientCA == "" {
		return usagef("--tls-cert, --tls-key and --client-ca are required (run 'moat dev-certs --out DIR' for development certificates)")
	}
	return nil
}

// TLS is a server's certificate files.
type TLS struct {
	Cert, Key, ClientCA string
	ReloadInterval      time.Duration
}

func (t *TLS) register(r *rules, clientCA string) {
	r.fs.StringVar(&t.Cert, "tls-cert", "", "server certificate (PEM); reloaded when the file changes (required)")
	r.fs.StringVar(&t.Key, "tls-key", "", "server private key (PEM); reloaded when the file changes (required)")
	r.fs.StringVar(&t.ClientCA, "client-ca", "", clientCA+"; reloaded when the file changes (required)")
	r.duration(&t.ReloadInterval, "cert-reload-interval", 10*time.Second, "", "how often certificate files are checked for changes")
}

// Registry is how registries are reached.
type Registry struct {
	Concurrency int
	ConfigFile  string
	Insecure    List
	// Identity modes and host patterns of the clouds (package credentials).
	AzureIdentity, AWSIdentity, GCPIdentity       string
	AzureRegistries, AWSRegistries, GCPRegistries List
	// Pull Secrets read through the Kubernetes API.
	PullSecrets             List
	PullSecretsOf, Kubeconf string
	// Namespaces whose own credentials serve their namespaced keys.
	NamespaceCredentials List
}

func (g *Registry) register(r *rules) {
	r.count(&g.Concurrency, "registry-concurrency", 32, "", "most requests in flight to one registry host, until its response headers arrive")
	r.fs.StringVar(&g.ConfigFile, "registry-config", "", "docker config file with registry credentials (config.json or a mounted .dockerconfigjson); empty: only the default keychain")
	r.fs.Var(&g.Insecure, "insecure-registries", "comma-separated registry hosts (host:port) that may be reached over plain HTTP; no other host is")
	r.fs.Var(&g.PullSecrets, "pull-secrets", "comma-separated image pull Secrets (namespace/name, of type kubernetes.io/dockerconfigjson) read through the Kubernetes API and followed as they change, for every registry")
	r.fs.StringVar(&g.PullSecretsOf, "pull-secrets-of-service-account", "", "a ServiceAccount (namespace/name, usually Moat's own) whose imagePullSecrets are read like --pull-secrets, after them")
	r.fs.Var(&g.NamespaceCredentials, "namespace-credentials", "comma-separated namespaces (or * for all) whose pull Secrets and ServiceAccounts Moat reads for their namespaced keys (moat.ns.v1:…); empty: namespaced keys use the cluster-wide credentials")
	r.fs.StringVar(&g.Kubeconf, "kubeconfig", "", "kubeconfig for reading pull Secrets; empty: the pod's in-cluster configuration")
	r.add("namespace-credentials", func() error {
		for _, ns := range g.NamespaceCredentials {
			if (ns == credentials.All && len(g.NamespaceCredentials) > 1) || ns == "" || (ns != credentials.All && len(validation.IsDNS1123Label(ns)) > 0) {
				return usagef("--namespace-credentials %q: list namespaces, or give * alone", ns)
			}
		}
		return nil
	})
	r.add("pull-secrets", func() error {
		for _, s := range append([]string(g.PullSecrets), g.PullSecretsOf) {
			if s == "" {
				continue
			}
			if _, err := credentials.ParseObjectRef(s); err != nil {
				return usagef("--pull-secrets / --pull-secrets-of-service-account: %v", err)
			}
		}
		return nil
	})
	modes := []string{credentials.Auto, credentials.On, credentials.Off}
	for _, c := range []struct {
		mode        *string
		hosts       *List
		name, usage string
		defaults    []string
	}{
		{&g.AzureIdentity, &g.AzureRegistries, "azure", "Microsoft Entra identity for Azure Container Registry: auto uses AKS workload identity when its environment is injected; on also falls back to the managed identity", credentials.DefaultAzureHosts},
		{&g.AWSIdentity, &g.AWSRegistries, "aws", "AWS default credential chain for ECR: auto uses it when IRSA or EKS Pod Identity is injected", credentials.DefaultAWSHosts},
		{&g.GCPIdentity, &g.GCPRegistries, "gcp", "Google application default credentials for Artifact Registry and GCR: auto uses them when GOOGLE_APPLICATION_CREDENTIALS is set; on also asks the metadata server (GKE workload identity)", credentials.DefaultGCPHosts},
	} {
		r.oneOf(c.mode, c.name+"-identity", credentials.Auto, modes, c.usage)
		r.fs.Var(c.hosts, c.name+"-registries", "comma-separated host patterns (path.Match) the "+c.name+" identity is asked about, and no other; empty: "+strings.Join(c.defaults, ","))
		r.add(c.name+"-registries", func() error {
			for _, h := range *c.hosts {
				if err := credentials.CheckHostPattern(h); err != nil {
					return usagef("--%s-registries: %v", c.name, err)
				}
			}
			return nil
		})
	}
}

// Redis is the shared tier the replicas of an install share (package
// shared); off while URL is empty.
type Redis struct {
	URL, PasswordFile, CA, Cert, Key, Prefix, MACKeyFile string
	Budget                                               time.Duration
}

func (g *Redis) register(r *rules) {
	r.fs.StringVar(&g.URL, "redis-url", "", "Redis (or Valkey) the replicas share answers through: redis://host:6379 or rediss://host:6380; empty: each replica keeps its own")
	r.fs.StringVar(&g.PasswordFile, "redis-password-file", "", "file holding the Redis password (a password in --redis-url is refused)")
	r.fs.StringVar(&g.CA, "redis-ca", "", "CA of a rediss:// server's certificate; empty: the system's roots")
	r.fs.StringVar(&g.Cert, "redis-cert", "", "client certificate for a rediss:// server that asks for one")
	r.fs.StringVar(&g.Key, "redis-key", "", "its private key")
	r.fs.StringVar(&g.Prefix, "redis-prefix", "moat:", "start of every key, so installs can share one server")
	r.fs.StringVar(&g.MACKeyFile, "redis-mac-key-file", "", "file holding the secret (32 bytes or more) every stored value is authenticated with; the same for every replica")
	r.duration(&g.Budget, "redis-budget", 30*time.Millisecond, "", "longest one Redis call may take; past it Moat answers from what it has")
	r.add("redis-url", func() error {
		if g.URL == "" {
			if g.PasswordFile != "" || g.CA != "" || g.Cert != "" || g.Key != "" || g.MACKeyFile != "" {
				return usagef("--redis-password-file, --redis-ca, --redis-cert, --redis-key and --redis-mac-key-file need --redis-url")
			}
			return nil
		}
		if g.MACKeyFile == "" {
			return usagef("--redis-url needs --redis-mac-key-file: values in Redis are trusted only under a key the replicas hold")
		}
		return nil
	})
}

func (g Redis) options() shared.Options {
	return shared.Options{URL: g.URL, PasswordFile: g.PasswordFile, CAFile: g.CA, CertFile: g.Cert, KeyFile: g.Key,
		Prefix: g.Prefix, MACKeyFile: g.MACKeyFile, Budget: g.Budget}
}

// Log is the log format and level.
type Log struct{ Format, Level string }

func (l *Log) register(r *rules) {
	r.oneOf(&l.Format, "log-format", "json", []string{"json", "text"}, "log format")
	r.oneOf(&l.Level, "log-level", "info", []string{"debug", "info", "warn", "error"}, "log level")
}

// Engine is the embedded scanner's (Grype's) database and platform.
type Engine struct {
	DBDir            string
	DBPath           string
	DBURL            string
	DBUpdateInterval time.Duration
	DBMaxAge         time.Duration
	Platform         string
}

func (e *Engine) register(r *rules) {
	r.fs.StringVar(&e.DBDir, "db-dir", "", "directory the vulnerability database is kept in (writable; each database gets its own sub-directory); empty: $TMPDIR/moat-vulndb")
	r.fs.StringVar(&e.DBPath, "db-path", "", "vulnerability database to load at start, offline: a Grype v6 vulnerability.db file or a database archive; loaded again when it changes")
	r.fs.StringVar(&e.DBURL, "db-url", "", "listing of Grype databases to download from and check for updates (https://grype.anchore.io/databases, or a mirror's); empty: offline")
	r.duration(&e.DBUpdateInterval, "db-update-interval", 6*time.Hour, "", "how often --db-url is checked for a newer database, or --db-path for a changed file")
	r.duration(&e.DBMaxAge, "db-max-age", 5*24*time.Hour, "", "scans fail (scan_failed) while the database is older than this, by its build time")
	r.fs.StringVar(&e.Platform, "scan-platform", "", "platform scanned in a multi-platform image, e.g. linux/arm64 (empty: linux/amd64; a single-platform image is scanned as it is)")
	r.add("scan-platform", func() error {
		if e.Platform == "" {
			return nil
		}
		if _, err := v1.ParsePlatform(e.Platform); err != nil {
			return usagef("--scan-platform %q: %v", e.Platform, err)
		}
		return nil
	})
}
