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

	"github.com/moat-dev/moat/provider/internal/answer"
)

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
	Findings []answer.Finding `json:"findings"`
	Scanner  answer.Tool      `json:"scanner"`
	// ScannedAt is when the scan finished.
	ScannedAt time.Time `json:"scannedAt"`
	// OS is the Linux distribution the scan found ("Debian GNU/Linux 12
	// (bookworm)"); empty when none.
	OS string `json:"os,omitempty"`

	// What the provider adds before judging (never sent by a scanner):
	// NotAffected are the findings VEX statements took out of Findings.
	NotAffected []answer.Finding `json:"-"`
	// FirstScanned is when the digest was first scanned; zero when unknown.
	FirstScanned time.Time `json:"-"`
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
