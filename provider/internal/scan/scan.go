// Package scan holds what a vulnerability scan produces and how Moat's scan
// policy turns it into one of four statuses. It knows no scanner: the
// embedded Grype engine and the remote scanner client both implement
// Scanner.
package scan

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The four statuses, in the vocabulary of image-scanning admission
// controllers.
const (
	Accepted           = "accepted"
	Rejected           = "rejected"
	ScanFailed         = "scan_failed"
	ReportNotAvailable = "report_not_available"
)

// Severities, most severe first: the keys of Counts and of thresholds.
var Severities = []string{"critical", "high", "medium", "low", "negligible", "unknown"}

// Scanner scans one image, named by digest ("registry/repo@sha256:…").
// Scan blocks until the scan is done or ctx ends.
type Scanner interface {
	Scan(ctx context.Context, image string) (Result, error)
	// Database identifies the vulnerability database scans use now; a
	// report made with another one is re-scanned. Empty when unknown.
	Database() string
}

// Result is a finished scan: every finding, before any policy.
type Result struct {
	Findings []Finding `json:"findings"`
	Scanner  Tool      `json:"scanner"`
	// ScannedAt is when the scan finished.
	ScannedAt time.Time `json:"scannedAt"`
}

// Tool names the scanner and its database.
type Tool struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	DB      Database `json:"db"`
}

// Database identifies a vulnerability database.
type Database struct {
	// ID changes whenever the database does: schema and build time.
	ID     string    `json:"id"`
	Schema string    `json:"schema"`
	Built  time.Time `json:"built"`
	// AgeAtScan is how old the database was when the scan ran ("26h0m0s").
	AgeAtScan string `json:"ageAtScan,omitempty"`
}

// Finding is one vulnerability in one package.
type Finding struct {
	ID        string `json:"id"`
	Severity  string `json:"severity"`
	Package   string `json:"package"`
	Installed string `json:"installed"`
	// Fixed is the first version with a fix; empty when there is none.
	Fixed string `json:"fixed,omitempty"`
}

// Counts holds findings per severity.
type Counts struct {
	Critical   int `json:"critical"`
	High       int `json:"high"`
	Medium     int `json:"medium"`
	Low        int `json:"low"`
	Negligible int `json:"negligible"`
	Unknown    int `json:"unknown"`
}

// Add counts one finding of severity s; anything unknown counts as unknown.
func (c *Counts) Add(s string) { *c.at(s)++ }

// Get returns the count for severity s.
func (c *Counts) Get(s string) int { return *c.at(s) }

func (c *Counts) at(s string) *int {
	switch s {
	case "critical":
		return &c.Critical
	case "high":
		return &c.High
	case "medium":
		return &c.Medium
	case "low":
		return &c.Low
	case "negligible":
		return &c.Negligible
	}
	return &c.Unknown
}

// ErrNoReport means there is no report yet and nothing failed (an image
// whose CI has not attached its scan yet): report_not_available, not
// scan_failed. Wrap it with the reason.
var ErrNoReport = errors.New("no report yet")

// Error is a scan that could not be done. Kind is a short label for metrics
// and logs; the message says what a person can do about it.
type Error struct {
	Kind string // database, pull, unsupported, scanner, timeout, unavailable
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind k.
func Errorf(kind, format string, args ...any) error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// OneLine folds the multi-line errors scanners write ("errors occurred:\n
// - a\n - b") into one line, as a reason must be.
func OneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}

// KindOf returns the kind of err, "scanner" when it has none.
func KindOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return "scanner"
}
