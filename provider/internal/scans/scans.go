// Package scans is the vulnerability scan as a check (package checks): a
// Scanner's findings judged by the provider's scan policy, with the four
// statuses and their lifetimes.
package scans

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/firstseen"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/scan"
)

// Options configure scanning.
type Options struct {
	Workers   int
	QueueSize int
	// ScanTimeout cancels a scan that runs longer; it becomes scan_failed.
	ScanTimeout time.Duration
	// ReportTTL is how long an accepted or rejected report is served.
	ReportTTL time.Duration
	// FailedTTL is how long a scan_failed report is served before the next
	// lookup scans again.
	FailedTTL time.Duration
	CacheSize int
	Policy    scan.Policy
	// Shared is the tier the replicas share, or nil.
	Shared checks.Store
	// FirstSeen dates findings (grace periods run from it); nil dates none,
	// and then no finding gets grace.
	FirstSeen *firstseen.Book
	// VEX takes out the findings trusted statements say do not apply; nil
	// takes out none.
	VEX Statements
}

// Statements are VEX statements (package vex): Apply splits an image's
// findings into those that count and those a statement takes out, and
// Version changes whenever the statements do.
type Statements interface {
	Apply(ctx context.Context, image string, fs []answer.Finding) (kept, out []answer.Finding, err error)
	Version() string
}

// DefaultOptions are the defaults of `moat serve`.
func DefaultOptions() Options {
	return Options{Workers: 2, QueueSize: 100, ScanTimeout: 2 * time.Minute, ReportTTL: 6 * time.Hour,
		FailedTTL: 30 * time.Second, CacheSize: 10000, Policy: scan.DefaultPolicy()}
}

// New starts scanning with s.
func New(opts Options, s scan.Scanner, m *metrics.Metrics, log *slog.Logger) (*checks.Service, error) {
	if err := opts.Policy.Validate(); err != nil {
		return nil, err
	}
	policy, err := json.Marshal(opts.Policy)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(policy)
	return checks.New("scan", checks.Options{Workers: opts.Workers, QueueSize: opts.QueueSize, Timeout: opts.ScanTimeout, CacheSize: opts.CacheSize, Shared: opts.Shared},
		check{scanner: s, opts: opts, policy: hex.EncodeToString(sum[:8]), log: log},
		m.Scans, log)
}

type check struct {
	scanner scan.Scanner
	opts    Options
	// policy identifies the scan policy: a report is the database's
	// findings judged by it (and by the VEX statements), so all make its
	// version.
	policy string
	log    *slog.Logger
}

// version of a report made with database db.
func (c check) version(db string) string {
	if db == "" {
		return ""
	}
	v := db + " policy:" + c.policy
	if c.opts.VEX != nil {
		v += " vex:" + c.opts.VEX.Version()
	}
	return v
}

func (c check) Run(ctx context.Context, image string) checks.Outcome {
	res, err := c.scanner.Scan(ctx, image)
	if errors.Is(err, scan.ErrNoReport) {
		r := scan.Pending(scan.OneLine(err.Error()))
		return checks.Outcome{Fragment: r.Fragment(), TTL: c.opts.FailedTTL, Status: answer.ReportNotAvailable}
	}
	if err != nil {
		return c.Failed(image, err)
	}
	if c.opts.VEX != nil {
		var verr error
		res.Findings, res.NotAffected, verr = c.opts.VEX.Apply(ctx, image, res.Findings)
		if verr != nil {
			c.log.Warn("the image's VEX attestations are not used; its findings count", "image", image, "error", verr.Error())
		}
	}
	if c.opts.FirstSeen != nil {
		c.date(ctx, image, &res)
	}
	now := time.Now()
	r := c.opts.Policy.Judge(res, now)
	// A report is judged again when a grace period in it ends.
	ttl := c.opts.ReportTTL
	if next, ok := c.opts.Policy.NextChange(res, now); ok && next.Sub(now) < ttl {
		ttl = max(next.Sub(now), time.Second)
	}
	return checks.Outcome{Fragment: r.Fragment(), TTL: ttl, Version: c.version(res.Scanner.DB.ID), Status: r.Status}
}

// date stamps res's findings with when they were first seen on image's
// digest, and res with when the digest was first scanned.
func (c check) date(ctx context.Context, image string, res *scan.Result) {
	_, digest, _ := strings.Cut(image, "@")
	rec := c.opts.FirstSeen.Observe(ctx, digest, append(res.Findings[:len(res.Findings):len(res.Findings)], res.NotAffected...))
	res.FirstScanned = rec.FirstScanned
	for _, fs := range [][]answer.Finding{res.Findings, res.NotAffected} {
		for i := range fs {
			if t, ok := rec.Seen[firstseen.Key(fs[i])]; ok {
				fs[i].FirstSeen = t.Format(time.RFC3339)
			}
		}
	}
}

func (c check) Failed(_ string, err error) checks.Outcome {
	kind := scan.KindOf(err)
	var te *checks.TimeoutError
	if errors.As(err, &te) {
		kind = "timeout"
	}
	r := scan.Failed(err, time.Now())
	return checks.Outcome{Fragment: r.Fragment(), TTL: c.opts.FailedTTL, Status: answer.ScanFailed, Kind: kind}
}

func (c check) Pending(reason string) []byte {
	r := scan.Pending(reason)
	return r.Fragment()
}

func (c check) Version() string { return c.version(c.scanner.Database()) }
