package scan

import (
	"strings"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
)

func findings() []answer.Finding {
	return []answer.Finding{
		{ID: "CVE-B", Severity: "high", Package: "b", Installed: "1", Fixed: "2"},
		{ID: "CVE-A", Severity: "critical", Package: "a", Installed: "1"},
		{ID: "CVE-C", Severity: "Weird", Package: "c", Installed: "1", Fixed: "3"},
		{ID: "CVE-D", Severity: "high", Package: "d", Installed: "1"},
	}
}

func TestJudgeCountsEverythingAndDecidesByThePolicy(t *testing.T) {
	res := Result{Findings: findings(), ScannedAt: time.Unix(0, 0)}
	cases := []struct {
		p      Policy
		status string
		reason string
	}{
		{Policy{Max: map[string]int{"critical": 0}}, answer.Rejected, "1 critical (max 0: CVE-A (critical, a 1, no fix yet))"},
		{Policy{Max: map[string]int{"critical": 1, "high": 1}}, answer.Rejected, "2 high (max 1: CVE-B (high, b 1, fixed in 2), CVE-D (high, d 1, no fix yet))"},
		{Policy{Max: map[string]int{"critical": 0, "high": 1}, IgnoreUnfixed: true}, answer.Accepted, "4 findings, within"},
		{Policy{Max: map[string]int{"critical": 0}, IgnoreIDs: []string{"CVE-A"}}, answer.Accepted, "within"},
		{Policy{Max: map[string]int{"unknown": 0}}, answer.Rejected, "1 unknown (max 0: CVE-C (unknown, c 1, fixed in 3))"},
		{Policy{}, answer.Accepted, "within"},
	}
	for _, c := range cases {
		r := c.p.Judge(res, time.Now())
		if r.Status != c.status || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("%+v: %s %q; want %s with %q", c.p, r.Status, r.Reason, c.status, c.reason)
		}
		if *r.Vulnerabilities != (answer.Counts{Critical: 1, High: 2, Unknown: 1}) || *r.Fixable != (answer.Counts{High: 1, Unknown: 1}) {
			t.Errorf("counts %+v fixable %+v: the policy must not change them", r.Vulnerabilities, r.Fixable)
		}
	}
}

func TestFindingsAreBoundedMostSevereFirst(t *testing.T) {
	r := Policy{MaxFindings: 2}.Judge(Result{Findings: findings()}, time.Now())
	if len(r.Findings) != 2 || r.Findings[0].ID != "CVE-A" || r.Findings[1].ID != "CVE-B" || r.FindingsOmitted != 2 {
		t.Errorf("%+v omitted %d", r.Findings, r.FindingsOmitted)
	}
	if !strings.Contains(string(r.Fragment()), `"findingsOmitted":2`) {
		t.Errorf("fragment: %s", r.Fragment())
	}
}

func TestPolicyValidation(t *testing.T) {
	for _, p := range []Policy{{Max: map[string]int{"severe": 0}}, {Max: map[string]int{"high": -1}}, {MaxFindings: -1},
		{Grace: map[string]time.Duration{"critical": 0}}, {Grace: map[string]time.Duration{"high": -time.Hour}}, {Grace: map[string]time.Duration{"severe": time.Hour}}} {
		if p.Validate() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	if err := DefaultPolicy().Validate(); err != nil {
		t.Error(err)
	}
}

func TestFailedReportIsOneLine(t *testing.T) {
	r := Failed(Errorf("pull", "errors occurred:\n  - a\n  - b"), time.Unix(0, 0))
	if r.Status != answer.ScanFailed || r.Reason != "errors occurred: - a - b" {
		t.Errorf("%+v", r)
	}
}

// A severity in another spelling counts, and is listed, as the schema
// names it; before, "High" counted as unknown.
func TestJudgeNamesSeveritiesAsTheSchemaDoes(t *testing.T) {
	r := Policy{Max: map[string]int{"high": 0}, MaxFindings: 5}.Judge(Result{Findings: []answer.Finding{
		{ID: "CVE-1", Severity: "HIGH", Package: "a", Installed: "1"},
		{ID: "CVE-2", Severity: "Bogus", Package: "b", Installed: "1"},
	}}, time.Now())
	if r.Status != answer.Rejected || r.Vulnerabilities.High != 1 || r.Vulnerabilities.Unknown != 1 {
		t.Fatalf("%+v %+v", r, r.Vulnerabilities)
	}
	if r.Findings[0].Severity != "high" || r.Findings[1].Severity != "unknown" {
		t.Fatalf("findings %+v", r.Findings)
	}
}

// A finding a database update brought (first seen after the digest's first
// scan) is out of the thresholds during its grace, and counts once the
// grace ends; one that was there at the first scan never gets grace; one
// with no first-seen date counts.
func TestGraceCountsFromFirstSeenAndOnlyForFindingsAnUpdateBrought(t *testing.T) {
	first := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	update := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	p := Policy{Max: map[string]int{"critical": 0}, Grace: map[string]time.Duration{"critical": 72 * time.Hour}, MaxFindings: 10}
	newCVE := answer.Finding{ID: "CVE-NEW", Severity: "critical", Package: "a", Installed: "1", Fixed: "2", FirstSeen: update.Format(time.RFC3339)}
	oldCVE := answer.Finding{ID: "CVE-OLD", Severity: "critical", Package: "b", Installed: "1", FirstSeen: first.Format(time.RFC3339)}
	undated := answer.Finding{ID: "CVE-UNDATED", Severity: "critical", Package: "c", Installed: "1"}
	highNew := answer.Finding{ID: "CVE-HIGH", Severity: "high", Package: "d", Installed: "1", FirstSeen: update.Format(time.RFC3339)}
	cases := []struct {
		name   string
		fs     []answer.Finding
		at     time.Time
		status string
		reason string
	}{
		{"new CVE inside its grace", []answer.Finding{newCVE}, update.Add(71 * time.Hour), answer.Accepted, "in their grace period: CVE-NEW (critical, a 1, fixed in 2) until 2026-12-04T06:00:00Z"},
		{"new CVE after its grace", []answer.Finding{newCVE}, update.Add(73 * time.Hour), answer.Rejected, "1 critical (max 0: CVE-NEW"},
		{"old CVE of the first scan", []answer.Finding{oldCVE}, first.Add(time.Hour), answer.Rejected, "CVE-OLD"},
		{"no first-seen date", []answer.Finding{undated}, update, answer.Rejected, "CVE-UNDATED"},
		{"severity without grace", []answer.Finding{highNew}, update.Add(time.Hour), answer.Accepted, "1 finding, within the scan policy"},
	}
	for _, c := range cases {
		res := Result{Findings: c.fs, FirstScanned: first}
		r := p.Judge(res, c.at)
		if r.Status != c.status || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("%s: %s %q; want %s with %q", c.name, r.Status, r.Reason, c.status, c.reason)
		}
		if r.FirstScanned != "2026-11-01T00:00:00Z" {
			t.Errorf("%s: firstScanned %q", c.name, r.FirstScanned)
		}
	}
	// Without a first-scan date (no record), nothing is in grace.
	if r := p.Judge(Result{Findings: []answer.Finding{newCVE}}, update.Add(time.Hour)); r.Status != answer.Rejected {
		t.Errorf("without a first-scan date: %s %q", r.Status, r.Reason)
	}
	// The report is judged again when the grace ends.
	next, ok := p.NextChange(Result{Findings: []answer.Finding{newCVE, oldCVE}, FirstScanned: first}, update.Add(time.Hour))
	if !ok || !next.Equal(update.Add(72*time.Hour)) {
		t.Errorf("next change %s %v; want the grace's end", next, ok)
	}
	if _, ok := p.NextChange(Result{Findings: []answer.Finding{newCVE}, FirstScanned: first}, update.Add(73*time.Hour)); ok {
		t.Error("a grace that ended is no next change")
	}
}

// Findings a VEX statement took out are listed apart, bounded like the
// findings, and in no count.
func TestNotAffectedFindingsAreListedApartAndBounded(t *testing.T) {
	na := []answer.Finding{
		{ID: "CVE-L", Severity: "low", Package: "l", Installed: "1", PURL: "pkg:deb/debian/l@1", VEX: &answer.VEX{Status: "fixed", Source: "file a.json"}},
		{ID: "CVE-K", Severity: "critical", Package: "k", Installed: "1", PURL: "pkg:deb/debian/k@1", VEX: &answer.VEX{Status: "not_affected", Source: "file a.json"}},
	}
	r := Policy{Max: map[string]int{"critical": 0}, MaxFindings: 1}.Judge(Result{NotAffected: na}, time.Now())
	if r.Status != answer.Accepted || r.Vulnerabilities.Critical != 0 || len(r.NotAffected) != 1 || r.NotAffected[0].ID != "CVE-K" ||
		r.NotAffected[0].PURL == "" || r.NotAffectedOmitted != 1 {
		t.Errorf("%s %+v, not affected %+v (%d more)", r.Status, r.Vulnerabilities, r.NotAffected, r.NotAffectedOmitted)
	}
}
