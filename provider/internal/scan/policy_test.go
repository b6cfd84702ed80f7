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
		{Policy{Max: map[string]int{"critical": 0}}, answer.Rejected, "1 critical (max 0: CVE-A)"},
		{Policy{Max: map[string]int{"critical": 1, "high": 1}}, answer.Rejected, "2 high (max 1: CVE-B, CVE-D)"},
		{Policy{Max: map[string]int{"critical": 0, "high": 1}, IgnoreUnfixed: true}, answer.Accepted, "4 findings, within"},
		{Policy{Max: map[string]int{"critical": 0}, IgnoreIDs: []string{"CVE-A"}}, answer.Accepted, "within"},
		{Policy{Max: map[string]int{"unknown": 0}}, answer.Rejected, "1 unknown (max 0: CVE-C)"},
		{Policy{}, answer.Accepted, "within"},
	}
	for _, c := range cases {
		r := c.p.Judge(res)
		if r.Status != c.status || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("%+v: %s %q; want %s with %q", c.p, r.Status, r.Reason, c.status, c.reason)
		}
		if *r.Vulnerabilities != (answer.Counts{Critical: 1, High: 2, Unknown: 1}) || *r.Fixable != (answer.Counts{High: 1, Unknown: 1}) {
			t.Errorf("counts %+v fixable %+v: the policy must not change them", r.Vulnerabilities, r.Fixable)
		}
	}
}

func TestFindingsAreBoundedMostSevereFirst(t *testing.T) {
	r := Policy{MaxFindings: 2}.Judge(Result{Findings: findings()})
	if len(r.Findings) != 2 || r.Findings[0].ID != "CVE-A" || r.Findings[1].ID != "CVE-B" || r.FindingsOmitted != 2 {
		t.Errorf("%+v omitted %d", r.Findings, r.FindingsOmitted)
	}
	if !strings.Contains(string(r.Fragment()), `"findingsOmitted":2`) {
		t.Errorf("fragment: %s", r.Fragment())
	}
}

func TestPolicyValidation(t *testing.T) {
	for _, p := range []Policy{{Max: map[string]int{"severe": 0}}, {Max: map[string]int{"high": -1}}, {MaxFindings: -1}} {
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
	}})
	if r.Status != answer.Rejected || r.Vulnerabilities.High != 1 || r.Vulnerabilities.Unknown != 1 {
		t.Fatalf("%+v %+v", r, r.Vulnerabilities)
	}
	if r.Findings[0].Severity != "high" || r.Findings[1].Severity != "unknown" {
		t.Fatalf("findings %+v", r.Findings)
	}
}
