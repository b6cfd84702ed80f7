package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/mtls"
	"github.com/moat-dev/moat/provider/internal/protocol"
	"github.com/moat-dev/moat/provider/internal/registry"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/scans"
	"github.com/moat-dev/moat/provider/internal/server"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// Serve is every setting of `moat serve`.
type Serve struct {
	r rules
	Server
	SkipVerify bool

	MaxRequestBytes  int
	MaxKeys          int
	ValidateDeadline time.Duration
	MutateDeadline   time.Duration

	CacheSize            int
	DigestTTL            time.Duration
	ErrorTTL             time.Duration
	StaleWhileRevalidate time.Duration
	ResolveTimeout       time.Duration
	Registry             Registry
	Redis                Redis

	ShutdownDelay   time.Duration
	ShutdownTimeout time.Duration
	Log             Log

	Scanner       string
	ScannerURL    string
	ScannerCA     string
	ScannerCert   string
	ScannerKey    string
	ScanWorkers   int
	ScanQueue     int
	ScanTimeout   time.Duration
	ScanWait      time.Duration
	ReportTTL     time.Duration
	ScanFailedTTL time.Duration
	ScanCacheSize int
	ScanMax       severityFlag
	ScanGrace     graceFlag
	VEXDir        string
	VEXAttested   bool
	ScanMaxListed int
	IgnoreUnfixed bool
	IgnoreIDs     List
	Attestations  bool
	Engine        Engine

	SignatureKeys          List
	SignatureIdentities    identityFlag
	FulcioRoots            string
	RekorKey               string
	CTLogKey               string
	IgnoreTlog             bool
	SignatureWorkers       int
	SignatureQueue         int
	SignatureTimeout       time.Duration
	SignatureTTL           time.Duration
	SignatureUnverifiedTTL time.Duration

	NodeReportCA     string
	NodeReportAddr   string
	NodeReportMaxAge time.Duration
}

// NewServe registers every setting of `moat serve` on fs, with its default.
func NewServe(fs *flag.FlagSet) *Serve {
	s := &Serve{r: rules{fs: fs}}
	r := &s.r
	s.Server.register(r, "address of the external-data endpoints (HTTPS, TLS 1.3, client certificate required)",
		"address of /metrics, /healthz and /readyz (plain HTTP)",
		"CA that signs the client certificate Gatekeeper presents (ca.crt of gatekeeper-webhook-server-cert)")
	fs.BoolVar(&s.SkipVerify, "insecure-skip-client-verify", false, "DEVELOPMENT ONLY: accept clients without a certificate")

	r.count(&s.MaxRequestBytes, "max-request-bytes", 1<<20, "", "largest request body accepted (bytes)")
	r.count(&s.MaxKeys, "max-keys", 2000, "", "most keys accepted in one request")
	r.duration(&s.ValidateDeadline, "validate-deadline", 2*time.Second, "", "longest /validate waits for registries; keep it below the validation Provider's spec.timeout")
	r.duration(&s.MutateDeadline, "mutate-deadline", 800*time.Millisecond, "", "longest /mutate waits for registries; keep it below the mutation Provider's spec.timeout")

	r.count(&s.CacheSize, "cache-size", 100000, "", "most answers kept in the cache (entries)")
	r.duration(&s.DigestTTL, "digest-ttl", 5*time.Minute, "", "how long a resolved digest is served before the registry is asked again")
	r.duration(&s.ErrorTTL, "error-ttl", 10*time.Second, "", "how long a failed resolution is served before the next try")
	r.duration(&s.StaleWhileRevalidate, "stale-while-revalidate", 0, "off", "serve an expired digest this much longer while a refresh runs")
	r.duration(&s.ResolveTimeout, "resolve-timeout", 10*time.Second, "", "longest one digest resolution may take, retries included; it may outlive the request")
	s.Registry.register(r)
	s.Redis.register(r)

	r.duration(&s.ShutdownDelay, "shutdown-delay", 0, "close at once", "after SIGTERM, keep serving (not ready) this long before closing listeners")
	r.duration(&s.ShutdownTimeout, "shutdown-timeout", 25*time.Second, "", "longest to wait for in-flight requests on shutdown")
	s.Log.register(r)

	d := scans.DefaultOptions()
	r.oneOf(&s.Scanner, "scanner", app.ScannerOff, []string{app.ScannerOff, app.ScannerEmbedded, app.ScannerService},
		"where images are scanned: not at all, by Grype in this process, or by a `moat scanner` service at --scanner-url")
	fs.StringVar(&s.ScannerURL, "scanner-url", "", "URL of the scanner service (https://moat-scanner:8443) when --scanner=service")
	fs.StringVar(&s.ScannerCA, "scanner-ca", "", "CA of the scanner service's certificate (--scanner=service)")
	fs.StringVar(&s.ScannerCert, "scanner-cert", "", "client certificate presented to the scanner service (--scanner=service)")
	fs.StringVar(&s.ScannerKey, "scanner-key", "", "its private key (--scanner=service)")
	r.count(&s.ScanWorkers, "scan-workers", d.Workers, "", "scans run at once")
	r.count(&s.ScanQueue, "scan-queue", d.QueueSize, "no queue: a lookup that finds every worker busy answers report_not_available", "scans waiting at most; beyond it a lookup answers report_not_available and asks again later")
	r.duration(&s.ScanTimeout, "scan-timeout", d.ScanTimeout, "", "a scan running longer is cancelled and answers scan_failed")
	r.duration(&s.ScanWait, "scan-wait", 0, "answer report_not_available / pending at once", "how long a lookup waits for scans and signature checks that are not done, inside its deadline")
	r.duration(&s.ReportTTL, "report-ttl", d.ReportTTL, "", "how long an accepted or rejected report is served before the image is scanned again")
	r.duration(&s.ScanFailedTTL, "scan-failed-ttl", d.FailedTTL, "", "how long a scan_failed report is served before the next lookup scans again")
	r.count(&s.ScanCacheSize, "scan-cache-size", d.CacheSize, "", "most reports kept (entries)")
	r.count(&s.ScanMaxListed, "scan-max-findings", d.Policy.MaxFindings, "list none", "most findings a report lists, most severe first (counts always cover all)")
	fs.BoolVar(&s.IgnoreUnfixed, "scan-ignore-unfixed", false, "findings with no fixed version do not count against --scan-max")
	s.ScanMax = severityFlag(d.Policy.Max)
	fs.Var(&s.ScanMax, "scan-max", "most findings per severity an accepted image may have, e.g. critical=0,high=5; severities not named are not limited; none: no limit")
	fs.Var(&s.IgnoreIDs, "scan-ignore-ids", "comma-separated finding IDs that do not count against --scan-max")
	fs.Var(&s.ScanGrace, "scan-grace", "per severity, how long a finding a database update brings to an image already scanned does not count against --scan-max, from when it was first seen, e.g. critical=72h,high=168h; a severity not named has no grace (docs/new-vulnerabilities.md)")
	fs.StringVar(&s.VEXDir, "vex-dir", "", "a directory of OpenVEX documents: findings they state not_affected or fixed for an image do not count (read again every 30s when it changed)")
	fs.BoolVar(&s.VEXAttested, "vex-attestations", false, "also use the image's OpenVEX attestations (cosign attest --type openvex) that verify under the --signature-* trust")
	fs.BoolVar(&s.Attestations, "scan-attestations", false, "answer from the newest cosign vuln attestation (signed under the --signature-* trust) when the image has one; others go to --scanner")
	s.Engine.register(r)

	fs.Var(&s.SignatureKeys, "signature-keys", "comma-separated PEM public keys (files, or mounted secrets) whose cosign signatures are trusted")
	fs.Var(&s.SignatureIdentities, "signature-identity", "a keyless signer to trust, repeatable: issuer=URL,subject=ID or issuer-regexp=RE,subject-regexp=RE (needs --signature-fulcio-roots)")
	fs.StringVar(&s.FulcioRoots, "signature-fulcio-roots", "", "PEM file of the Fulcio root and intermediate certificates of keyless signatures")
	fs.StringVar(&s.RekorKey, "signature-rekor-key", "", "PEM public key of the Rekor log: every signature must then carry a Rekor bundle that verifies (offline)")
	fs.StringVar(&s.CTLogKey, "signature-ctlog-key", "", "PEM public key of the certificate-transparency log; without it keyless certificates' SCTs are not checked")
	fs.BoolVar(&s.IgnoreTlog, "signature-ignore-tlog", false, "do not require transparency-log entries (needed when no --signature-rekor-key is given)")
	r.count(&s.SignatureWorkers, "signature-workers", 2, "", "signature checks run at once")
	r.count(&s.SignatureQueue, "signature-queue", 100, "no queue: a lookup that finds every worker busy answers pending", "signature checks waiting at most")
	r.duration(&s.SignatureTimeout, "signature-timeout", 30*time.Second, "", "a longer signature check is cancelled and answers unverified")
	r.duration(&s.SignatureTTL, "signature-ttl", 6*time.Hour, "", "how long a verified signature is served")
	r.duration(&s.SignatureUnverifiedTTL, "signature-unverified-ttl", 30*time.Second, "", "how long an unverified result is served before the next lookup checks again")

	fs.StringVar(&s.NodeReportCA, "node-report-ca", "", "CA that signs the client certificates of `moat node-scan`: accept node reports on --node-report-addr and answer node keys on POST /nodes (docs/nodes.md); empty: off")
	fs.StringVar(&s.NodeReportAddr, "node-report-addr", ":8444", "address of PUT /v1/node-report (HTTPS, TLS 1.3, a client certificate of --node-report-ca required)")
	r.duration(&s.NodeReportMaxAge, "node-report-max-age", 24*time.Hour, "", "the oldest a node report is served; an older one answers report_not_available")
	return s
}

// ServeDefaults is `moat serve` with every default and nothing given.
func ServeDefaults() *Serve { return NewServe(flag.NewFlagSet("moat serve", flag.ContinueOnError)) }

// Load applies the --config file under the command line (which wins) and
// checks every setting.
func (s *Serve) Load() error {
	if err := s.Server.load(s.r.fs); err != nil {
		return err
	}
	return s.Validate()
}

// Validate checks every setting and how they fit together.
func (s *Serve) Validate() error {
	if err := s.r.validate(); err != nil {
		return err
	}
	if s.Scanner == app.ScannerService && (s.ScannerURL == "" || s.ScannerCA == "" || s.ScannerCert == "" || s.ScannerKey == "") {
		return usagef("--scanner=service needs --scanner-url, --scanner-ca, --scanner-cert and --scanner-key")
	}
	if err := s.policy().Validate(); err != nil {
		return usagef("--scan-max, --scan-grace: %v", err)
	}
	signing := len(s.SignatureKeys)+len(s.SignatureIdentities) > 0
	if !signing && (s.FulcioRoots != "" || s.RekorKey != "" || s.CTLogKey != "") {
		return usagef("--signature-fulcio-roots, --signature-rekor-key and --signature-ctlog-key need --signature-keys or --signature-identity")
	}
	if s.Attestations && !signing {
		return usagef("--scan-attestations verifies attestations against the signature trust: give --signature-keys or --signature-identity")
	}
	if s.VEXAttested && !signing {
		return usagef("--vex-attestations verifies attestations against the signature trust: give --signature-keys or --signature-identity")
	}
	if s.NodeReportCA != "" && s.NodeReportAddr == "" {
		return usagef("--node-report-ca needs --node-report-addr, the address node scanners send their reports to")
	}
	if (s.VEXDir != "" || s.VEXAttested || len(s.ScanGrace) > 0) && s.Scanner == app.ScannerOff {
		return usagef("--vex-dir, --vex-attestations and --scan-grace apply to scans: set --scanner embedded or service")
	}
	return nil
}

func (s *Serve) policy() scan.Policy {
	return scan.Policy{Max: s.ScanMax, IgnoreUnfixed: s.IgnoreUnfixed, IgnoreIDs: s.IgnoreIDs, MaxFindings: s.ScanMaxListed, Grace: s.ScanGrace}
}

// App is the provider's wiring configuration; version goes into the user
// agent.
func (s *Serve) App(version string) app.Config {
	return app.Config{
		Server: server.Options{
			Limits:             protocol.Limits{MaxBodyBytes: int64(s.MaxRequestBytes), MaxKeys: s.MaxKeys},
			ValidateDeadline:   s.ValidateDeadline,
			MutateDeadline:     s.MutateDeadline,
			SkipClientVerify:   s.SkipVerify,
			CertReloadInterval: s.TLS.ReloadInterval,
			ShutdownDelay:      s.ShutdownDelay,
			ShutdownTimeout:    s.ShutdownTimeout,
		},
		Lookup: lookup.Options{
			CacheSize:            s.CacheSize,
			DigestTTL:            s.DigestTTL,
			ErrorTTL:             s.ErrorTTL,
			StaleWhileRevalidate: s.StaleWhileRevalidate,
			ResolveTimeout:       s.ResolveTimeout,
		},
		Registry: s.Registry.options(version),
		Shared:   s.Redis.options(),
		Certs:    mtls.Files{Cert: s.TLS.Cert, Key: s.TLS.Key, ClientCA: s.TLS.ClientCA},
		Scan: app.ScanConfig{
			Mode: s.Scanner,
			Scans: scans.Options{Workers: s.ScanWorkers, QueueSize: s.ScanQueue, ScanTimeout: s.ScanTimeout, ReportTTL: s.ReportTTL,
				FailedTTL: s.ScanFailedTTL, CacheSize: s.ScanCacheSize, Policy: s.policy()},
			Wait:         s.ScanWait,
			Engine:       s.Engine.config(),
			RemoteURL:    s.ScannerURL,
			RemoteTLS:    client.Files{CA: s.ScannerCA, Cert: s.ScannerCert, Key: s.ScannerKey},
			Attestations: s.Attestations,
			VEXDir:       s.VEXDir,
			VEXAttested:  s.VEXAttested,
		},
		Signatures: app.SignatureConfig{
			Trust: sigcheck.Trust{KeyFiles: s.SignatureKeys, Identities: s.SignatureIdentities, FulcioRoots: s.FulcioRoots,
				RekorKey: s.RekorKey, CTLogKey: s.CTLogKey, IgnoreTlog: s.IgnoreTlog},
			Checks:        checks.Options{Workers: s.SignatureWorkers, QueueSize: s.SignatureQueue, Timeout: s.SignatureTimeout, CacheSize: 10000},
			VerifiedTTL:   s.SignatureTTL,
			UnverifiedTTL: s.SignatureUnverifiedTTL,
		},
		Nodes: app.NodeConfig{CA: s.NodeReportCA, Addr: s.NodeReportAddr, MaxAge: s.NodeReportMaxAge, Policy: s.policy()},
	}
}

func (g Registry) options(version string) registry.Options {
	return registry.Options{PerHostConcurrency: g.Concurrency, RegistryConfig: g.ConfigFile, InsecureRegistries: g.Insecure, UserAgent: "moat/" + version,
		Credentials: credentials.Options{Azure: g.AzureIdentity, AWS: g.AWSIdentity, GCP: g.GCPIdentity,
			AzureHosts: g.AzureRegistries, AWSHosts: g.AWSRegistries, GCPHosts: g.GCPRegistries,
			PullSecrets: g.PullSecrets, PullSecretsOf: g.PullSecretsOf, Namespaces: g.NamespaceCredentials, Kubeconfig: g.Kubeconf}}
}

func (e Engine) config() app.EngineConfig {
	dir := e.DBDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "moat-vulndb")
	}
	return app.EngineConfig{
		DB:               vulndb.Options{Dir: dir, URL: e.DBURL, MaxAge: e.DBMaxAge},
		DBPath:           e.DBPath,
		DBUpdateInterval: e.DBUpdateInterval,
		Platform:         e.Platform,
	}
}

// Print writes every setting as a --config file would hold it.
func Print(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == "check-config" {
			return
		}
		fmt.Fprintf(&b, "%s: %q\n", f.Name, f.Value.String())
	})
	return b.String()
}
