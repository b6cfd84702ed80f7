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
	return nil
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

// Judge applies the policy to a finished scan.
func (p Policy) Judge(res Result) answer.Scan {
	var all, fixable, counted answer.Counts
	ignored := make(map[string]bool, len(p.IgnoreIDs))
	for _, id := range p.IgnoreIDs {
		ignored[id] = true
	}
	worst := map[string][]string{}
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
		counted.Add(f.Severity)
		worst[f.Severity] = append(worst[f.Severity], f.ID)
	}
	var broken []string
	for _, s := range answer.Severities {
		max, ok := p.Max[s]
		if !ok || counted.Get(s) <= max {
			continue
		}
		broken = append(broken, fmt.Sprintf("%d %s (max %d: %s)", counted.Get(s), s, max, clipIDs(worst[s], 5)))
	}
	r := answer.Scan{
		Status:          answer.Accepted,
		Reason:          fmt.Sprintf("%d findings, within the scan policy", len(res.Findings)),
		Vulnerabilities: &all,
		Fixable:         &fixable,
		Scanner:         &res.Scanner,
		ScannedAt:       res.ScannedAt.UTC().Format(time.RFC3339),
	}
	if len(broken) > 0 {
		r.Status = answer.Rejected
		r.Reason = "findings over the scan policy's thresholds: " + strings.Join(broken, "; ")
	}
	r.Findings, r.FindingsOmitted = mostSevere(findings, p.MaxFindings)
	return r
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

func clipIDs(ids []string, n int) string {
	if len(ids) <= n {
		return strings.Join(ids, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ids[:n], ", "), len(ids)-n)
}
