package scan

import (
	"strings"
	"testing"
	"time"
)

func findings() []Finding {
	return []Finding{
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
		{Policy{Max: map[string]int{"critical": 0}}, Rejected, "1 critical (max 0: CVE-A)"},
		{Policy{Max: map[string]int{"critical": 1, "high": 1}}, Rejected, "2 high (max 1: CVE-B, CVE-D)"},
		{Policy{Max: map[string]int{"critical": 0, "high": 1}, IgnoreUnfixed: true}, Accepted, "4 findings, within"},
		{Policy{Max: map[string]int{"critical": 0}, IgnoreIDs: []string{"CVE-A"}}, Accepted, "within"},
		{Policy{Max: map[string]int{"unknown": 0}}, Rejected, "1 unknown (max 0: CVE-C)"},
		{Policy{}, Accepted, "within"},
	}
	for _, c := range cases {
		r := c.p.Judge(res)
		if r.Status != c.status || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("%+v: %s %q; want %s with %q", c.p, r.Status, r.Reason, c.status, c.reason)
		}
		if *r.Vulnerabilities != (Counts{Critical: 1, High: 2, Unknown: 1}) || *r.Fixable != (Counts{High: 1, Unknown: 1}) {
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
	if r.Status != ScanFailed || r.Reason != "errors occurred: - a - b" {
		t.Errorf("%+v", r)
	}
}
