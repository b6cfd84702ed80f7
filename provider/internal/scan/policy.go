package scan

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
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
}

// DefaultPolicy rejects any critical finding and lists 50 findings.
func DefaultPolicy() Policy {
	return Policy{Max: map[string]int{"critical": 0}, MaxFindings: 50}
}

// Validate reports thresholds that name no severity or are negative.
func (p Policy) Validate() error {
	for s, n := range p.Max {
		if !isSeverity(s) {
			return fmt.Errorf("scan policy: unknown severity %q (want one of %s)", s, strings.Join(Severities, ", "))
		}
		if n < 0 {
			return fmt.Errorf("scan policy: %s threshold %d is negative", s, n)
		}
	}
	if p.MaxFindings < 0 {
		return fmt.Errorf("scan policy: max findings %d is negative", p.MaxFindings)
	}
	return nil
}

func isSeverity(s string) bool { return slices.Contains(Severities, s) }

// ParseSeverity is a scanner's severity in Moat's words: lower case, and
// "unknown" for anything that is not one of Severities.
func ParseSeverity(s string) string {
	if s = strings.ToLower(s); isSeverity(s) {
		return s
	}
	return "unknown"
}

// Report is the scan part of the /validate value (schema moat.v1).
type Report struct {
	Status string `json:"status"`
	// Reason says why, in words: which thresholds broke, why the scan
	// failed, or that it is still running.
	Reason          string    `json:"reason"`
	Vulnerabilities *Counts   `json:"vulnerabilities,omitempty"`
	Fixable         *Counts   `json:"fixable,omitempty"`
	Findings        []Finding `json:"findings,omitempty"`
	// FindingsOmitted is how many findings the list leaves out.
	FindingsOmitted int    `json:"findingsOmitted,omitempty"`
	Scanner         *Tool  `json:"scanner,omitempty"`
	ScannedAt       string `json:"scannedAt,omitempty"`
}

// Judge applies the policy to a finished scan.
func (p Policy) Judge(res Result) Report {
	var all, fixable, counted Counts
	ignored := make(map[string]bool, len(p.IgnoreIDs))
	for _, id := range p.IgnoreIDs {
		ignored[id] = true
	}
	worst := map[string][]string{}
	for _, f := range res.Findings {
		all.Add(f.Severity)
		if f.Fixed != "" {
			fixable.Add(f.Severity)
		}
		if ignored[f.ID] || (p.IgnoreUnfixed && f.Fixed == "") {
			continue
		}
		counted.Add(f.Severity)
		worst[ParseSeverity(f.Severity)] = append(worst[ParseSeverity(f.Severity)], f.ID)
	}
	var broken []string
	for _, s := range Severities {
		max, ok := p.Max[s]
		if !ok || counted.Get(s) <= max {
			continue
		}
		broken = append(broken, fmt.Sprintf("%d %s (max %d: %s)", counted.Get(s), s, max, clipIDs(worst[s], 5)))
	}
	r := Report{
		Status:          Accepted,
		Reason:          fmt.Sprintf("%d findings, within the scan policy", len(res.Findings)),
		Vulnerabilities: &all,
		Fixable:         &fixable,
		Scanner:         &res.Scanner,
		ScannedAt:       res.ScannedAt.UTC().Format(time.RFC3339),
	}
	if len(broken) > 0 {
		r.Status = Rejected
		r.Reason = "findings over the scan policy's thresholds: " + strings.Join(broken, "; ")
	}
	r.Findings, r.FindingsOmitted = mostSevere(res.Findings, p.MaxFindings)
	return r
}

// Failed is the report of a scan that could not be done.
func Failed(err error, at time.Time) Report {
	return Report{Status: ScanFailed, Reason: OneLine(err.Error()), ScannedAt: at.UTC().Format(time.RFC3339)}
}

// Pending is the report of a scan that is queued or running.
func Pending(reason string) Report {
	return Report{Status: ReportNotAvailable, Reason: reason}
}

// Fragment is the report as members of a JSON object, without the braces,
// so it can be appended to the digest part of a value.
func (r *Report) Fragment() []byte {
	b, err := json.Marshal(r)
	if err != nil || len(b) < 2 { // strings, ints and slices of them always encode
		return []byte(`"status":"scan_failed","reason":"internal error: the report could not be encoded"`)
	}
	return b[1 : len(b)-1]
}

var severityRank = func() map[string]int {
	m := map[string]int{}
	for i, s := range Severities {
		m[s] = i
	}
	return m
}()

// mostSevere returns up to n findings, most severe first, then by ID, and
// how many it left out.
func mostSevere(fs []Finding, n int) ([]Finding, int) {
	out := append([]Finding(nil), fs...)
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

func clipIDs(ids []string, n int) string {
	if len(ids) <= n {
		return strings.Join(ids, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ids[:n], ", "), len(ids)-n)
}
