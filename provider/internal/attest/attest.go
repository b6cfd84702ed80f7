// Package attest is the attestation scanner backend: it reads the newest
// vulnerability attestation (cosign's vuln/v1 predicate, as `cosign attest
// --type vuln` attaches the output of Grype or Trivy made in CI), verified
// against the provider's signature trust, and turns its findings into a
// scan.Result, so the same scan policy decides.
package attest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/sigcheck"
)

// VulnPredicate is cosign's vulnerability-scan predicate type.
const VulnPredicate = "https://cosign.sigstore.dev/attestation/vuln/v1"

// Source is a scan.Scanner answering from attestations.
type Source struct {
	Verifier *sigcheck.Verifier
	// Fallback scans images that carry no vuln attestation; nil answers
	// report_not_available for them.
	Fallback scan.Scanner
}

// Database is the fallback's database ("" without one).
func (s *Source) Database() string {
	if s.Fallback != nil {
		return s.Fallback.Database()
	}
	return ""
}

// Scan answers from the newest verified vuln attestation of image.
func (s *Source) Scan(ctx context.Context, image string) (scan.Result, error) {
	sts, err := s.Verifier.Attestations(ctx, image)
	if errors.Is(err, sigcheck.ErrNoAttestations) {
		return s.none(ctx, image, "no vulnerability attestation is attached to the image yet")
	}
	if err != nil {
		return scan.Result{}, &scan.Error{Kind: "attestation", Err: err}
	}
	var vulns []predicate
	var others []string
	for _, st := range sts {
		if st.PredicateType != VulnPredicate {
			others = append(others, st.PredicateType)
			continue
		}
		var p predicate
		if err := json.Unmarshal(st.Predicate, &p); err != nil {
			return scan.Result{}, scan.Errorf("attestation", "%s: the vuln attestation signed by %s could not be read: %v", image, st.Signer, err)
		}
		p.signer = st.Signer
		vulns = append(vulns, p)
	}
	if len(vulns) == 0 {
		return s.none(ctx, image, fmt.Sprintf("the image's verified attestations are of other predicate types (%s), none of type %s",
			strings.Join(others, ", "), VulnPredicate))
	}
	sort.SliceStable(vulns, func(i, j int) bool { return vulns[i].Metadata.ScanFinishedOn.After(vulns[j].Metadata.ScanFinishedOn) })
	newest := vulns[0]
	fs, err := findings(newest.Scanner.Result)
	if err != nil {
		return scan.Result{}, scan.Errorf("attestation", "%s: the vuln attestation signed by %s: %v", image, newest.signer, err)
	}
	name := newest.Scanner.URI
	if name == "" {
		name = "unknown scanner"
	}
	return scan.Result{
		Findings:  fs,
		Scanner:   answer.Tool{Name: "attestation: " + name, Version: newest.Scanner.Version, DB: answer.Database{ID: newest.Scanner.DB.Version, Schema: newest.Scanner.DB.URI}},
		ScannedAt: newest.Metadata.ScanFinishedOn,
	}, nil
}

// none is the answer for an image without a usable attestation.
func (s *Source) none(ctx context.Context, image, why string) (scan.Result, error) {
	if s.Fallback != nil {
		return s.Fallback.Scan(ctx, image)
	}
	return scan.Result{}, fmt.Errorf("%s: %s: %w", image, why, scan.ErrNoReport)
}

// predicate is cosign's CosignVulnPredicate, the parts read here.
type predicate struct {
	Scanner struct {
		URI     string `json:"uri"`
		Version string `json:"version"`
		DB      struct {
			URI     string `json:"uri"`
			Version string `json:"version"`
		} `json:"db"`
		Result json.RawMessage `json:"result"`
	} `json:"scanner"`
	Metadata struct {
		ScanFinishedOn time.Time `json:"scanFinishedOn"`
	} `json:"metadata"`
	signer string
}

// findings reads a scanner's own JSON report: Grype's (`grype -o json`:
// matches) or Trivy's (`trivy image -f json`: Results).
func findings(raw json.RawMessage) ([]answer.Finding, error) {
	var r struct {
		Matches *[]struct {
			Vulnerability struct {
				ID       string `json:"id"`
				Severity string `json:"severity"`
				Fix      struct {
					Versions []string `json:"versions"`
					State    string   `json:"state"`
				} `json:"fix"`
			} `json:"vulnerability"`
			Artifact struct {
				Name    string `json:"name"`
				Version string `json:"version"`
				PURL    string `json:"purl"`
			} `json:"artifact"`
		} `json:"matches"`
		Results *[]struct {
			Vulnerabilities []struct {
				ID        string `json:"VulnerabilityID"`
				Package   string `json:"PkgName"`
				Installed string `json:"InstalledVersion"`
				Fixed     string `json:"FixedVersion"`
				Severity  string `json:"Severity"`
				Pkg       struct {
					PURL string `json:"PURL"`
				} `json:"PkgIdentifier"`
			} `json:"Vulnerabilities"`
		} `json:"Results"`
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New("its scanner.result is empty")
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("its scanner.result is not a Grype or Trivy JSON report: %w", err)
	}
	var out []answer.Finding
	switch {
	case r.Matches != nil:
		for _, m := range *r.Matches {
			f := answer.Finding{ID: m.Vulnerability.ID, Severity: scan.ParseSeverity(m.Vulnerability.Severity), Package: m.Artifact.Name, Installed: m.Artifact.Version, PURL: m.Artifact.PURL}
			if m.Vulnerability.Fix.State == "fixed" && len(m.Vulnerability.Fix.Versions) > 0 {
				f.Fixed = m.Vulnerability.Fix.Versions[0]
			}
			out = append(out, f)
		}
	case r.Results != nil:
		for _, res := range *r.Results {
			for _, v := range res.Vulnerabilities {
				out = append(out, answer.Finding{ID: v.ID, Severity: scan.ParseSeverity(v.Severity), Package: v.Package, Installed: v.Installed, Fixed: v.Fixed, PURL: v.Pkg.PURL})
			}
		}
	default:
		return nil, errors.New("its scanner.result is neither a Grype report (matches) nor a Trivy report (Results)")
	}
	for _, f := range out {
		if f.ID == "" {
			return nil, errors.New("a finding has no vulnerability ID")
		}
	}
	return out, nil
}
