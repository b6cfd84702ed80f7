package scan

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
)

// Policy is the provider's own scan policy: it turns findings into
// accepted or rejected. Namespace owners add their own rules on top in the
// MoatImageScan constraints.
type Policy struct {
	// Max is the most findings of a severity an accepted image may have.
	// A severity that is absent is not limited.
	Max map[string]int
	// IgnoreUnfixed leaves findings without a fixed version out of the
	// thresholds.
	IgnoreUnfixed bool
	// IgnoreIDs are finding IDs left out of the thresholds.
	IgnoreIDs []string
	// MaxFindings bounds the findings a report lists, most severe first; the
	// counts always cover all of them. 0 lists none.
	MaxFindings int
	// Grace is, per severity, how long a finding a database update brought
	// to an image already scanned stays out of the thresholds, counted from
	// when it was first seen. A severity that is absent has none.
	Grace map[string]time.Duration
}

// DefaultPolicy rejects any critical finding and lists 50 findings.
func DefaultPolicy() Policy {
	return Policy{Max: map[string]int{"critical": 0}, MaxFindings: 50}
}

// Validate reports thresholds that name no severity or are negative.
func (p Policy) Validate() error {
	for s, n := range p.Max {
		if !isSeverity(s) {
			return fmt.Errorf("scan policy: unknown severity %q (want one of %s)", s, strings.Join(answer.Severities, ", "))
		}
		if n < 0 {
			return fmt.Errorf("scan policy: %s threshold %d is negative", s, n)
		}
	}
	if p.MaxFindings < 0 {
		return fmt.Errorf("scan policy: max findings %d is negative", p.MaxFindings)
	}
	for s, d := range p.Grace {
		if !isSeverity(s) {
			return fmt.Errorf("scan policy: grace: unknown severity %q (want one of %s)", s, strings.Join(answer.Severities, ", "))
		}
		if d <= 0 {
			return fmt.Errorf("scan policy: grace for %s is %s; want a positive duration such as 72h (leave the severity out for no grace)", s, d)
		}
	}
	return nil
}

// GraceEnd is when f's grace period ends under the policy; ok is false when
// f gets none: its severity has no grace, it has no first-seen time, or it
// was already there when Moat first scanned the image (a new image with an
// old CVE gets no grace).
func (p Policy) GraceEnd(f answer.Finding, firstScanned time.Time) (end time.Time, ok bool) {
	d, ok := p.Grace[ParseSeverity(f.Severity)]
	if !ok || d <= 0 || firstScanned.IsZero() {
		return time.Time{}, false
	}
	seen, err := time.Parse(time.RFC3339, f.FirstSeen)
	if err != nil || !seen.After(firstScanned) {
		return time.Time{}, false
	}
	return seen.Add(d), true
}

// NextChange is when a report judged at now may judge differently: the
// first end of a grace period still running. ok is false when none runs.
func (p Policy) NextChange(res Result, now time.Time) (next time.Time, ok bool) {
	for _, f := range res.Findings {
		if end, in := p.GraceEnd(f, res.FirstScanned); in && end.After(now) && (!ok || end.Before(next)) {
			next, ok = end, true
		}
	}
	return next, ok
}

func isSeverity(s string) bool { return slices.Contains(answer.Severities, s) }

// ParseSeverity is a scanner's severity in Moat's words: lower case, and
// "unknown" for anything that is not one of answer.Severities.
func ParseSeverity(s string) string {
	if s = strings.ToLower(s); isSeverity(s) {
		return s
	}
	return "unknown"
}

// Judge applies the policy to a finished scan at time now.
func (p Policy) Judge(res Result, now time.Time) answer.Scan {
	var all, fixable, counted answer.Counts
	ignored := make(map[string]bool, len(p.IgnoreIDs))
	for _, id := range p.IgnoreIDs {
		ignored[id] = true
	}
	worst := map[string][]answer.Finding{}
	var inGrace []string
	// Severities as the schema names them, whatever the scanner wrote: a
	// remote scanner of another version may send "High".
	findings := make([]answer.Finding, len(res.Findings))
	for i, f := range res.Findings {
		f.Severity = ParseSeverity(f.Severity)
		findings[i] = f
	}
	for _, f := range findings {
		all.Add(f.Severity)
		if f.Fixed != "" {
			fixable.Add(f.Severity)
		}
		if ignored[f.ID] || (p.IgnoreUnfixed && f.Fixed == "") {
			continue
		}
		if end, ok := p.GraceEnd(f, res.FirstScanned); ok && now.Before(end) {
			inGrace = append(inGrace, fmt.Sprintf("%s until %s", Describe(f), end.UTC().Format(time.RFC3339)))
			continue
		}
		counted.Add(f.Severity)
		worst[f.Severity] = append(worst[f.Severity], f)
	}
	var broken []string
	for _, s := range answer.Severities {
		max, ok := p.Max[s]
		if !ok || counted.Get(s) <= max {
			continue
		}
		broken = append(broken, fmt.Sprintf("%d %s (max %d: %s)", counted.Get(s), s, max, describeSome(worst[s], 3)))
	}
	r := answer.Scan{
		Status:          answer.Accepted,
		Reason:          fmt.Sprintf("%s, within the scan policy", plural(len(res.Findings), "finding")),
		Vulnerabilities: &all,
		Fixable:         &fixable,
		Scanner:         &res.Scanner,
		ScannedAt:       res.ScannedAt.UTC().Format(time.RFC3339),
	}
	if !res.FirstScanned.IsZero() {
		r.FirstScanned = res.FirstScanned.UTC().Format(time.RFC3339)
	}
	if len(broken) > 0 {
		r.Status = answer.Rejected
		r.Reason = "findings over the scan policy's thresholds: " + strings.Join(broken, "; ")
	}
	if len(inGrace) > 0 {
		r.Reason += fmt.Sprintf("; in their grace period: %s", clip(inGrace, 3))
	}
	r.Findings, r.FindingsOmitted = mostSevere(findings, p.MaxFindings)
	r.NotAffected, r.NotAffectedOmitted = mostSevere(res.NotAffected, p.MaxFindings)
	for i := range r.Findings {
		r.Findings[i].PURL = "" // most of a finding's bytes, and no template reads it
	}
	return r
}

// Describe names a finding for a person who has to fix it:
// "CVE-2026-1 (critical, openssl 3.0.1, fixed in 3.0.9)".
func Describe(f answer.Finding) string {
	fix := "no fix yet"
	if f.Fixed != "" {
		fix = "fixed in " + f.Fixed
	}
	return fmt.Sprintf("%s (%s, %s %s, %s)", f.ID, ParseSeverity(f.Severity), f.Package, f.Installed, fix)
}

func describeSome(fs []answer.Finding, n int) string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = Describe(f)
	}
	return clip(out, n)
}

// Failed is the report of a scan that could not be done.
func Failed(err error, at time.Time) answer.Scan {
	return answer.Scan{Status: answer.ScanFailed, Reason: OneLine(err.Error()), ScannedAt: at.UTC().Format(time.RFC3339)}
}

// Pending is the report of a scan that is queued or running.
func Pending(reason string) answer.Scan {
	return answer.Scan{Status: answer.ReportNotAvailable, Reason: reason}
}

var severityRank = func() map[string]int {
	m := map[string]int{}
	for i, s := range answer.Severities {
		m[s] = i
	}
	return m
}()

// mostSevere sorts fs, most severe first, then by ID, and returns up to n
// of them and how many it left out.
func mostSevere(fs []answer.Finding, n int) ([]answer.Finding, int) {
	out := fs
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := severityRank[ParseSeverity(out[i].Severity)], severityRank[ParseSeverity(out[j].Severity)]
		if ri != rj {
			return ri < rj
		}
		if out[i].ID != out[j].ID {
			return out[i].ID < out[j].ID
		}
		return out[i].Package < out[j].Package
	})
	if len(out) <= n {
		return out, 0
	}
	return out[:n], len(out) - n
}

// plural is "1 finding", "2 findings".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// clip joins the first n of items and says how many more there are.
func clip(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}
