package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/scans"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
	"github.com/moat-dev/moat/provider/internal/vulndb"
)

// engineFlags are the embedded scanner's flags, shared by `moat serve` and
// `moat scanner`.
func engineFlags(fs *flag.FlagSet) func() app.EngineConfig {
	dir := fs.String("db-dir", filepath.Join(os.TempDir(), "moat-vulndb"), "directory the vulnerability database is kept in (writable; each database gets its own sub-directory)")
	path := fs.String("db-path", "", "vulnerability database to load at start, offline: a Grype v6 vulnerability.db file or a database archive")
	url := fs.String("db-url", "", "listing of Grype databases to download from and check for updates (https://grype.anchore.io/databases, or a mirror's); empty: offline")
	every := fs.Duration("db-update-interval", 6*time.Hour, "how often --db-url is checked for a newer database")
	maxAge := fs.Duration("db-max-age", 5*24*time.Hour, "scans fail (scan_failed) while the database is older than this (by its build time); 0: no limit")
	platform := fs.String("scan-platform", "", "platform scanned in a multi-platform image, e.g. linux/arm64 (empty: linux/amd64; a single-platform image is scanned as it is)")
	return func() app.EngineConfig {
		return app.EngineConfig{
			DB:               vulndb.Options{Dir: *dir, URL: *url, MaxAge: *maxAge},
			DBPath:           *path,
			DBUpdateInterval: *every,
			Platform:         *platform,
		}
	}
}

// scanFlags are `moat serve`'s scanning flags.
func scanFlags(fs *flag.FlagSet) func() (app.ScanConfig, error) {
	d := scans.DefaultOptions()
	mode := fs.String("scanner", app.ScannerOff, "where images are scanned: off, embedded (Grype in this process) or remote (a `moat scanner` service at --scanner-url)")
	url := fs.String("scanner-url", "", "URL of the scanner service (https://moat-scanner:8443) when --scanner=remote")
	ca := fs.String("scanner-ca", "", "CA of the scanner service's certificate (--scanner=remote)")
	cert := fs.String("scanner-cert", "", "client certificate presented to the scanner service (--scanner=remote)")
	key := fs.String("scanner-key", "", "its private key")
	workers := fs.Int("scan-workers", d.Workers, "scans run at once")
	queue := fs.Int("scan-queue", d.QueueSize, "scans waiting at most; beyond it a lookup answers report_not_available and asks again later")
	timeout := fs.Duration("scan-timeout", d.ScanTimeout, "a scan running longer is cancelled and answers scan_failed")
	wait := fs.Duration("scan-wait", 0, "how long a lookup waits for scans and signature checks that are not done, inside its deadline (0: answer report_not_available / pending at once)")
	reportTTL := fs.Duration("report-ttl", d.ReportTTL, "how long an accepted or rejected report is served before the image is scanned again")
	failedTTL := fs.Duration("scan-failed-ttl", d.FailedTTL, "how long a scan_failed report is served before the next lookup scans again")
	cacheSize := fs.Int("scan-cache-size", d.CacheSize, "most reports kept (entries)")
	maxFindings := fs.Int("scan-max-findings", d.Policy.MaxFindings, "most findings a report lists, most severe first (counts always cover all)")
	ignoreUnfixed := fs.Bool("scan-ignore-unfixed", false, "findings with no fixed version do not count against --scan-max")
	thresholds := severityFlag{"critical": 0}
	fs.Var(&thresholds, "scan-max", "most findings per severity an accepted image may have, e.g. critical=0,high=5; severities not named are not limited")
	var ignoreIDs listFlag
	fs.Var(&ignoreIDs, "scan-ignore-ids", "comma-separated finding IDs that do not count against --scan-max")
	attestations := fs.Bool("scan-attestations", false, "answer from the newest cosign vuln attestation (signed under the --signature-* trust) when the image has one; others go to --scanner")
	eng := engineFlags(fs)
	return func() (app.ScanConfig, error) {
		c := app.ScanConfig{
			Mode: *mode,
			Scans: scans.Options{Workers: *workers, QueueSize: *queue, ScanTimeout: *timeout, ReportTTL: *reportTTL,
				FailedTTL: *failedTTL, CacheSize: *cacheSize,
				Policy: scan.Policy{Max: thresholds, IgnoreUnfixed: *ignoreUnfixed, IgnoreIDs: ignoreIDs, MaxFindings: *maxFindings}},
			Wait:         *wait,
			Engine:       eng(),
			RemoteURL:    *url,
			Attestations: *attestations,
		}
		c.RemoteTLS.CA, c.RemoteTLS.Cert, c.RemoteTLS.Key = *ca, *cert, *key
		switch *mode {
		case app.ScannerOff, app.ScannerEmbedded:
		case app.ScannerRemote:
			if *url == "" || *ca == "" || *cert == "" || *key == "" {
				return c, usageError{"--scanner=remote needs --scanner-url, --scanner-ca, --scanner-cert and --scanner-key"}
			}
		default:
			return c, usageError{fmt.Sprintf("--scanner %q: want off, embedded or remote", *mode)}
		}
		if *workers < 1 || *queue < 0 || *cacheSize < 1 || *timeout <= 0 {
			return c, usageError{"--scan-workers, --scan-cache-size and --scan-timeout must be positive, --scan-queue zero or more"}
		}
		if err := c.Scans.Policy.Validate(); err != nil {
			return c, usageError{err.Error()}
		}
		return c, nil
	}
}

// severityFlag is "critical=0,high=5".
type severityFlag map[string]int

func (f *severityFlag) String() string {
	var parts []string
	for k, v := range *f {
		parts = append(parts, k+"="+strconv.Itoa(v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (f *severityFlag) Set(s string) error {
	m := severityFlag{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || err != nil {
			return fmt.Errorf("%q: want severity=count, e.g. critical=0", p)
		}
		m[strings.ToLower(strings.TrimSpace(k))] = n
	}
	*f = m
	return nil
}

// signatureFlags are `moat serve`'s signature-check flags.
func signatureFlags(fs *flag.FlagSet) func() (app.SignatureConfig, error) {
	var keys listFlag
	fs.Var(&keys, "signature-keys", "comma-separated PEM public keys (files, or mounted secrets) whose cosign signatures are trusted")
	var ids identityFlag
	fs.Var(&ids, "signature-identity", "a keyless signer to trust, repeatable: issuer=URL,subject=ID or issuer-regexp=RE,subject-regexp=RE (needs --signature-fulcio-roots)")
	fulcio := fs.String("signature-fulcio-roots", "", "PEM file of the Fulcio root and intermediate certificates of keyless signatures")
	rekor := fs.String("signature-rekor-key", "", "PEM public key of the Rekor log: every signature must then carry a Rekor bundle that verifies (offline)")
	ctlog := fs.String("signature-ctlog-key", "", "PEM public key of the certificate-transparency log; without it keyless certificates' SCTs are not checked")
	ignoreTlog := fs.Bool("signature-ignore-tlog", false, "do not require transparency-log entries (needed when no --signature-rekor-key is given)")
	workers := fs.Int("signature-workers", 2, "signature checks run at once")
	queue := fs.Int("signature-queue", 100, "signature checks waiting at most")
	timeout := fs.Duration("signature-timeout", 30*time.Second, "a longer signature check is cancelled and answers unverified")
	verifiedTTL := fs.Duration("signature-ttl", 6*time.Hour, "how long a verified signature is served")
	unverifiedTTL := fs.Duration("signature-unverified-ttl", 30*time.Second, "how long an unverified result is served before the next lookup checks again")
	return func() (app.SignatureConfig, error) {
		c := app.SignatureConfig{
			Trust:       sigcheck.Trust{KeyFiles: keys, Identities: ids, FulcioRoots: *fulcio, RekorKey: *rekor, CTLogKey: *ctlog, IgnoreTlog: *ignoreTlog},
			Checks:      checks.Options{Workers: *workers, QueueSize: *queue, Timeout: *timeout, CacheSize: 10000},
			VerifiedTTL: *verifiedTTL, UnverifiedTTL: *unverifiedTTL,
		}
		if *workers < 1 || *queue < 0 || *timeout <= 0 {
			return c, usageError{"--signature-workers and --signature-timeout must be positive, --signature-queue zero or more"}
		}
		if !c.Enabled() && (*fulcio != "" || *rekor != "" || *ctlog != "") {
			return c, usageError{"--signature-fulcio-roots, --signature-rekor-key and --signature-ctlog-key need --signature-keys or --signature-identity"}
		}
		return c, nil
	}
}

// identityFlag is a repeatable keyless identity.
type identityFlag []cosign.Identity

func (f *identityFlag) String() string { return fmt.Sprint([]cosign.Identity(*f)) }

func (f *identityFlag) Set(s string) error {
	var id cosign.Identity
	// Split at ",field=" only, so a regular expression may hold commas.
	fields := []string{"issuer=", "subject=", "issuer-regexp=", "subject-regexp="}
	rest := s
	for rest != "" {
		var k string
		for _, f := range fields {
			if strings.HasPrefix(rest, f) {
				k = f
			}
		}
		if k == "" {
			return fmt.Errorf("%q: want issuer=URL,subject=ID (or issuer-regexp=, subject-regexp=)", s)
		}
		rest = rest[len(k):]
		end := len(rest)
		for _, f := range fields {
			if i := strings.Index(rest, ","+f); i >= 0 && i < end {
				end = i
			}
		}
		v := rest[:end]
		rest = strings.TrimPrefix(rest[end:], ",")
		switch k {
		case "issuer=":
			id.Issuer = v
		case "subject=":
			id.Subject = v
		case "issuer-regexp=":
			id.IssuerRegExp = v
		case "subject-regexp=":
			id.SubjectRegExp = v
		}
	}
	if (id.Issuer == "" && id.IssuerRegExp == "") || (id.Subject == "" && id.SubjectRegExp == "") {
		return fmt.Errorf("%q: an identity needs an issuer and a subject (exact or -regexp)", s)
	}
	*f = append(*f, id)
	return nil
}
