package lookup_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/checks"
	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/reference"
	"github.com/moat-dev/moat/provider/internal/resolve"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/testenv/answertest"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

type fixed struct{}

func (fixed) Resolve(context.Context, reference.Ref) (resolve.Result, error) {
	return resolve.Result{Digest: digest, MediaType: "application/vnd.oci.image.index.v1+json"}, nil
}

// outcome is a check that answers with one fragment.
type outcome []byte

func (o outcome) Get(context.Context, string, time.Time) *checks.Entry {
	return &checks.Entry{Fragment: o}
}

// The provider splices pre-encoded parts into one value; the bytes it
// sends decode into exactly answer.Value (nothing unknown, nothing lost),
// re-encode to the same bytes, and match the published schema.
func TestSplicedAnswersAreExactlyTheValueType(t *testing.T) {
	res := answer.Database{ID: "v6.1.2@2026-11-30T00:00:00Z", Schema: "v6.1.2", Built: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), AgeAtScan: "26h0m0s"}
	judged := scan.DefaultPolicy().Judge(scan.Result{
		Findings: []answer.Finding{
			{ID: "CVE-2026-0001", Severity: "critical", Package: "openssl", Installed: "3.0.1", Fixed: "3.0.2"},
			{ID: "GHSA-aaaa-bbbb-cccc", Severity: "High", Package: "lodash", Installed: "4.17.0"},
		},
		Scanner:   answer.Tool{Name: "grype", Version: "0.104.0", DB: res},
		ScannedAt: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
	}, time.Now())
	failed := scan.Failed(errors.New("image not pullable:\n - HTTP 401"), time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	pending := scan.Pending("the scan of x is queued or running; ask again later")
	cases := map[string][]outcome{
		"digest only":        nil,
		"rejected scan":      {judged.Fragment()},
		"failed scan":        {failed.Fragment()},
		"pending scan":       {pending.Fragment()},
		"verified signature": {answer.Signature{Verified: true, Status: answer.Verified, Identity: "key release.pub"}.Fragment()},
		"scan and signature": {judged.Fragment(), answer.Signature{Status: answer.Unverified, Reason: "no signatures found"}.Fragment()},
		"pending both":       {pending.Fragment(), answer.Signature{Status: answer.Pending, Reason: "queued"}.Fragment()},
	}
	for name, outs := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := lookup.New(lookup.Options{CacheSize: 10, DigestTTL: time.Minute, ErrorTTL: time.Second, ResolveTimeout: time.Second},
				fixed{}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			var cs []lookup.Checks
			for _, o := range outs {
				cs = append(cs, o)
			}
			if len(cs) > 0 {
				s.AddChecks(0, cs...)
			}
			for _, key := range []string{"nginx:1.27", "nginx@" + digest} {
				a := s.Lookup(context.Background(), time.Now().Add(5*time.Second), []string{key})[0]
				raw, ok := bytes.CutPrefix(a.Validate, []byte(`"value":`))
				if !ok {
					t.Fatalf("%s: not a value: %s", key, a.Validate)
				}
				v := answertest.Check(t, raw)
				if again := answertest.Encode(t, v); !bytes.Equal(again, raw) {
					t.Errorf("%s: spliced\n%s\nre-encoded from answer.Value\n%s", key, raw, again)
				}
				if v.Digest != digest || (len(outs) > 0) != (v.Scan != nil || v.Signature != nil) {
					t.Errorf("%s: %+v", key, v)
				}
			}
		})
	}
}

// The schema refuses what the type cannot hold.
func TestSchemaRefusesWhatTheTypeCannotHold(t *testing.T) {
	ok := `{"schema":"moat.v2","digest":"` + digest + `"`
	for name, raw := range map[string]string{
		"unknown member":    ok + `,"verdict":"fine"}`,
		"unknown status":    ok + `,"status":"banana","reason":""}`,
		"status, no reason": ok + `,"status":"accepted"}`,
		"short digest":      `{"schema":"moat.v2","digest":"sha256:0"}`,
		"another schema":    `{"schema":"moat.v1","digest":"` + digest + `"}`,
		"no digest":         `{"schema":"moat.v2"}`,
		"a moat.v1 member":  ok + `,"pinned":"p"}`,
		"bad signature":     ok + `,"signature":{"status":"verified"}}`,
	} {
		if answertest.Validate([]byte(raw)) == nil {
			t.Errorf("%s: the schema accepts %s", name, raw)
		}
	}
	if err := answertest.Validate([]byte(ok + "}")); err != nil {
		t.Errorf("the smallest value: %v", err)
	}
}
