// Package answer is the moat.v2 value: the JSON object /validate answers for
// an image key, as one Go type. The provider encodes each part once (the
// digest part when a tag resolves, the scan and signature parts when their
// checks finish) and splices the parts into one object per answer; clients
// (moat lookup, moat verify, moat bench, the tests) decode it into Value.
// docs/protocol/moat.v2.schema.json is generated from this file.
package answer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Schema names the version of the value. Fields are only ever added within
// a version; a rename or removal makes a new version. moat.v2 dropped the
// resolution's reference, pinned, mediaType and resolvedAt (issue 19): no
// template read them, and Gatekeeper decoded them on every admission that
// missed its cache.
const Schema = "moat.v2"

// Scan statuses, in the vocabulary of image-scanning admission controllers.
const (
	Accepted           = "accepted"
	Rejected           = "rejected"
	ScanFailed         = "scan_failed"
	ReportNotAvailable = "report_not_available"
)

// Signature statuses.
const (
	Verified   = "verified"
	Unverified = "unverified"
	Pending    = "pending"
)

// Severities, most severe first: the keys of Counts and of scan thresholds.
var Severities = []string{"critical", "high", "medium", "low", "negligible", "unknown"}

// Value is the moat.v2 answer for a key that resolved to a digest.
type Value struct {
	Resolution
	// The scan part: present when the provider scans (or reads vuln
	// attestations); absent, never guessed, when it does not.
	*Scan
	// Signature is present when the provider checks cosign signatures.
	Signature *Signature `json:"signature,omitempty"`
}

// Resolution is the part of a value every resolved key has: the digest.
// Only what a template reads: the key already names the image, and
// `moat lookup` shows people the canonical reference pinned to the digest.
type Resolution struct {
	// Schema is "moat.v2".
	Schema string `json:"schema" enum:"moat.v2"`
	// Digest is what the tag points at now (the index's digest for a multi-platform image), or the digest the key pinned.
	Digest string `json:"digest" pattern:"^sha256:[0-9a-f]{64}$"`
}

// Scan is the vulnerability scan part of a value.
type Scan struct {
	// Status is the scan policy's verdict, or why there is none.
	Status string `json:"status" enum:"accepted,rejected,scan_failed,report_not_available"`
	// Reason says why, in words: which thresholds broke, why the scan failed, or that it is still running.
	Reason string `json:"reason"`
	// Vulnerabilities counts every finding per severity (accepted and rejected only).
	Vulnerabilities *Counts `json:"vulnerabilities,omitempty"`
	// Fixable counts the findings that have a fixed version.
	Fixable *Counts `json:"fixable,omitempty"`
	// Findings lists findings, most severe first, up to the provider's --scan-max-findings.
	Findings []Finding `json:"findings,omitempty"`
	// FindingsOmitted is how many findings the list leaves out.
	FindingsOmitted int `json:"findingsOmitted,omitempty" minimum:"0"`
	// FirstScanned is when Moat first scanned this digest (RFC 3339, UTC): a finding first seen then was in the image when Moat met it, and gets no grace period.
	FirstScanned string `json:"firstScanned,omitempty" format:"date-time"`
	// NotAffected lists the findings a trusted VEX statement says do not apply (not_affected or fixed); they are in no count and in no threshold.
	NotAffected []Finding `json:"notAffected,omitempty"`
	// NotAffectedOmitted is how many of those the list leaves out (it is bounded like findings).
	NotAffectedOmitted int `json:"notAffectedOmitted,omitempty" minimum:"0"`
	// Scanner names the scanner and database that made the report.
	Scanner *Tool `json:"scanner,omitempty"`
	// ScannedAt is when the scan finished, or failed (RFC 3339, UTC).
	ScannedAt string `json:"scannedAt,omitempty" format:"date-time"`
}

// Finding is one vulnerability in one package.
type Finding struct {
	// ID is the advisory: CVE-…, GHSA-….
	ID string `json:"id"`
	// Severity is one of critical, high, medium, low, negligible, unknown.
	Severity string `json:"severity" enum:"critical,high,medium,low,negligible,unknown"`
	// Package is the affected package's name.
	Package string `json:"package"`
	// Installed is the version in the image.
	Installed string `json:"installed"`
	// Fixed is the first version with a fix; absent when there is none.
	Fixed string `json:"fixed,omitempty"`
	// PURL is the package URL of the affected package, when the scanner gives one: sent by scanners to the provider, and in answers only for notAffected findings (what a VEX statement matched); the findings list leaves it out to keep answers small.
	PURL string `json:"purl,omitempty"`
	// FirstSeen is when Moat first saw this finding on this digest (RFC 3339, UTC); the same on every replica sharing a tier. Grace periods count from it.
	FirstSeen string `json:"firstSeen,omitempty" format:"date-time"`
	// Published is when the advisory was published, from the vulnerability database, where it has a date.
	Published string `json:"published,omitempty" format:"date-time"`
	// VEX is the statement that makes the finding not apply (only in notAffected).
	VEX *VEX `json:"vex,omitempty"`
}

// VEX is the OpenVEX statement that removed a finding.
type VEX struct {
	// Status is not_affected or fixed.
	Status string `json:"status" enum:"not_affected,fixed"`
	// Justification is the statement's justification (not_affected), e.g. vulnerable_code_not_in_execute_path.
	Justification string `json:"justification,omitempty"`
	// Impact is the statement's impact statement, when it has one.
	Impact string `json:"impact,omitempty"`
	// Source names the document: "file <name>" or "attestation signed by <identity>".
	Source string `json:"source"`
}

// Counts holds findings per severity.
type Counts struct {
	Critical   int `json:"critical" minimum:"0"`
	High       int `json:"high" minimum:"0"`
	Medium     int `json:"medium" minimum:"0"`
	Low        int `json:"low" minimum:"0"`
	Negligible int `json:"negligible" minimum:"0"`
	Unknown    int `json:"unknown" minimum:"0"`
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

// Tool names a scanner and its database.
type Tool struct {
	// Name of the scanner: grype, or the tool a vuln attestation names.
	Name string `json:"name"`
	// Version of the scanner.
	Version string `json:"version"`
	// DB is the vulnerability database.
	DB Database `json:"db"`
}

// Database identifies a vulnerability database.
type Database struct {
	// ID changes whenever the database does: schema and build time.
	ID string `json:"id"`
	// Schema is the database's schema version.
	Schema string `json:"schema"`
	// Built is when the database was built.
	Built time.Time `json:"built"`
	// AgeAtScan is how old the database was when the scan ran ("26h0m0s").
	AgeAtScan string `json:"ageAtScan,omitempty"`
}

// Signature is the cosign signature part of a value.
type Signature struct {
	// Verified is true when a signature verified under the configured trust.
	Verified bool `json:"verified"`
	// Status is verified, unverified, or pending while the check runs.
	Status string `json:"status" enum:"verified,unverified,pending"`
	// Identity says who signed: "key <file>", or the keyless subject and its issuer.
	Identity string `json:"identity,omitempty"`
	// Reason says why a signature did not verify, or that the check is still running.
	Reason string `json:"reason,omitempty"`
}

// Fragment is the scan part as members of a JSON object, without the
// braces, to be spliced into a value after its digest part.
func (s *Scan) Fragment() []byte {
	b, err := json.Marshal(s)
	if err != nil || len(b) < 2 { // strings, ints, times and slices of them always encode
		return []byte(`"status":"scan_failed","reason":"internal error: the report could not be encoded"`)
	}
	return b[1 : len(b)-1]
}

// Fragment is the signature part as the `signature` member of a value.
func (s Signature) Fragment() []byte {
	b, _ := json.Marshal(s) // strings and a bool always encode
	return append([]byte(`"signature":`), b...)
}

// Decode decodes a value strictly: a member Value does not have is an
// error, so a client never silently drops what the provider said.
func Decode(raw []byte) (*Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var v Value
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not a %s value: %w", Schema, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("not a %s value: data after the object", Schema)
	}
	if v.Schema != Schema {
		return nil, fmt.Errorf("schema %q, want %q", v.Schema, Schema)
	}
	return &v, nil
}

// NodeSchema names the version of a node's value.
const NodeSchema = "moat.node.v1"

// Node is the moat.node.v1 answer for a node key ("<node name>/<boot ID>"): the scan of the node's own file system
// by `moat node-scan`, judged by the provider's scan policy, with the scan part's fields as an image's value has them.
type Node struct {
	// Schema is "moat.node.v1".
	Schema string `json:"schema" enum:"moat.node.v1"`
	// Node is the node's name.
	Node string `json:"node"`
	// BootID is the boot the report describes (the node's status.nodeInfo.bootID); a report of another boot is never served.
	BootID string `json:"bootID"`
	// Pool is the node pool the node scanner read from the node's labels (AKS, EKS, GKE); absent when none.
	Pool string `json:"pool,omitempty"`
	// OS is the Linux distribution found on the node's root file system.
	OS string `json:"os,omitempty"`
	*Scan
}
