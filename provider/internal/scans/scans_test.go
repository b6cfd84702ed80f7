package scans_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/lookup"
	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/internal/scan"
	"github.com/moat-dev/moat/provider/internal/shared"
	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/provider/testenv/answertest"
)

// value is a /validate value with its scan part, checked against the schema.
type value = answer.Value

func decode(t *testing.T, a *lookup.Answer) value {
	t.Helper()
	raw, ok := bytes.CutPrefix(a.Validate, []byte(`"value":`))
	if !ok {
		t.Fatalf("not a value: %s", a.Validate)
	}
	v := answertest.Check(t, raw)
	if v.Scan == nil {
		t.Fatalf("no scan part: %s", raw)
	}
	return *v
}

func ask(t *testing.T, env *testenv.Env, keys ...string) []value {
	t.Helper()
	var out []value
	for _, a := range env.Service.Lookup(context.Background(), time.Now().Add(2*time.Second), keys) {
		out = append(out, decode(t, a))
	}
	return out
}

// settle asks until no answer is report_not_available.
func settle(t *testing.T, env *testenv.Env, keys ...string) []value {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		vs := ask(t, env, keys...)
		pending := false
		for _, v := range vs {
			pending = pending || v.Status == answer.ReportNotAvailable
		}
		if !pending {
			return vs
		}
		if time.Now().After(deadline) {
			t.Fatalf("scans still pending after 30s: %+v", vs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func scansTotal(env *testenv.Env) float64 {
	var n float64
	for _, s := range []string{answer.Accepted, answer.Rejected, answer.ScanFailed} {
		n += testutil.ToFloat64(env.Metrics.Scans.Done.WithLabelValues(s))
	}
	return n
}

func TestEachStatusWithItsCountsAndIDs(t *testing.T) {
	env := testenv.Start(t, testenv.ScanDefaults())
	crit, _ := env.PushSample(t, "s/critical:1", "critical")
	high, _ := env.PushSample(t, "s/high:1", "high")
	clean, _ := env.PushSample(t, "s/clean:1", "clean")
	bad, _ := env.PushSample(t, "s/bad:1", "unreadable")
	chart, _ := env.PushSample(t, "s/chart:1", "artifact")

	first := ask(t, env, crit, high, clean, bad, chart)
	for i, v := range first {
		if v.Status != answer.ReportNotAvailable || !strings.Contains(v.Reason, "queued or running") {
			t.Errorf("first answer %d: %s %q; want report_not_available (scan-wait is 0)", i, v.Status, v.Reason)
		}
		if v.Digest == "" {
			t.Errorf("first answer %d has no digest: the scan must not hold up the digest", i)
		}
	}
	vs := settle(t, env, crit, high, clean, bad, chart)

	c := vs[0]
	if c.Status != answer.Rejected || !strings.Contains(c.Reason, "1 critical (max 0: MOAT-TEST-0001 (critical, moat-sample-critical 1.0.0, fixed in 2.0.0))") {
		t.Errorf("critical: %s %q", c.Status, c.Reason)
	}
	if *c.Vulnerabilities != (answer.Counts{Critical: 1}) || *c.Fixable != (answer.Counts{Critical: 1}) {
		t.Errorf("critical counts: %+v fixable %+v", c.Vulnerabilities, c.Fixable)
	}
	want := answer.Finding{ID: "MOAT-TEST-0001", Severity: "critical", Package: "moat-sample-critical", Installed: "1.0.0", Fixed: "2.0.0",
		FirstSeen: c.FirstScanned, Published: "2026-03-01T00:00:00Z"}
	if len(c.Findings) != 1 || c.Findings[0] != want || c.FirstScanned == "" {
		t.Errorf("critical findings: %+v", c.Findings)
	}
	if c.Scanner == nil || c.Scanner.Name != "grype" || c.Scanner.DB.ID == "" || c.Scanner.DB.Built.IsZero() || c.Scanner.DB.AgeAtScan == "" || c.ScannedAt == "" {
		t.Errorf("critical: scanner identity missing: %+v at %q", c.Scanner, c.ScannedAt)
	}

	h := vs[1]
	if h.Status != answer.Accepted || *h.Vulnerabilities != (answer.Counts{High: 1, Medium: 1}) || *h.Fixable != (answer.Counts{High: 1}) {
		t.Errorf("high: %s %q %+v %+v", h.Status, h.Reason, h.Vulnerabilities, h.Fixable)
	}
	if len(h.Findings) != 2 || h.Findings[0].ID != "MOAT-TEST-0002" || h.Findings[1].ID != "MOAT-TEST-0003" || h.Findings[1].Fixed != "" {
		t.Errorf("high findings, most severe first: %+v", h.Findings)
	}

	if cl := vs[2]; cl.Status != answer.Accepted || *cl.Vulnerabilities != (answer.Counts{}) || len(cl.Findings) != 0 {
		t.Errorf("clean: %+v", cl)
	}
	if b := vs[3]; b.Status != answer.ScanFailed || !strings.Contains(b.Reason, "could not be read") || strings.Contains(b.Reason, "\n") {
		t.Errorf("unreadable: %s %q", b.Status, b.Reason)
	}
	if a := vs[4]; a.Status != answer.ScanFailed || !strings.Contains(a.Reason, "unsupported layer media type") {
		t.Errorf("an OCI artifact that is not an image: %s %q", a.Status, a.Reason)
	}
	if n := testutil.ToFloat64(env.Metrics.Scans.Failures.WithLabelValues("unsupported")); n != 1 {
		t.Errorf("%v scans counted as unsupported, want the artifact's", n)
	}
	if n := scansTotal(env); n != 5 {
		t.Errorf("%v scans for 5 images", n)
	}
}

func TestTwoTagsOfOneDigestShareOneReport(t *testing.T) {
	env := testenv.Start(t, testenv.ScanDefaults())
	a, d1 := env.PushSample(t, "s/a:1", "high")
	b, d2 := env.PushSample(t, "other/b:2", "high")
	if d1 != d2 {
		t.Fatal("the sample image is not reproducible")
	}
	settle(t, env, a)
	if v := ask(t, env, b)[0]; v.Status != answer.Accepted {
		t.Errorf("second tag of a scanned digest: %s %q; want the first tag's report", v.Status, v.Reason)
	}
	if n := scansTotal(env); n != 1 {
		t.Errorf("%v scans for one digest", n)
	}
}

func TestConcurrentLookupsOfOneDigestMakeOneScan(t *testing.T) {
	env := testenv.Start(t, testenv.ScanDefaults())
	ref, _ := env.PushSample(t, "s/one:1", "critical")
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env.Service.Lookup(context.Background(), time.Now().Add(time.Second), []string{ref})
		}()
	}
	wg.Wait()
	if v := settle(t, env, ref)[0]; v.Status != answer.Rejected {
		t.Fatalf("%s %q", v.Status, v.Reason)
	}
	if n := scansTotal(env); n != 1 {
		t.Errorf("200 concurrent lookups of one digest made %v scans", n)
	}
}

func TestFullQueueAnswersPendingThenEveryImageGetsItsReport(t *testing.T) {
	cfg := testenv.ScanDefaults()
	cfg.Scan.Scans.Workers, cfg.Scan.Scans.QueueSize = 1, 10
	env := testenv.Start(t, cfg)
	env.Registry.SetDelay(5 * time.Millisecond) // scans outlast the lookups below
	var refs []string
	for i := range 50 {
		ref, _ := env.Push(t, fmt.Sprintf("many/img%d:1", i))
		refs = append(refs, ref)
	}
	full := 0
	for _, v := range ask(t, env, refs...) {
		if v.Status != answer.ReportNotAvailable {
			t.Fatalf("first answer %s %q", v.Status, v.Reason)
		}
		if strings.Contains(v.Reason, "queue is full") {
			full++
		}
	}
	if full < 50-10-1 { // the queue and the one worker take 11 at most
		t.Errorf("%d of 50 answers say the queue is full; want at least 39", full)
	}
	if n := testutil.ToFloat64(env.Metrics.Scans.QueueFull); n != float64(full) {
		t.Errorf("moat_scans_queue_full_total %v, %d answers said so", n, full)
	}
	for _, v := range settle(t, env, refs...) {
		if v.Status != answer.Accepted {
			t.Errorf("%s %q", v.Status, v.Reason)
		}
	}
	if n := scansTotal(env); n != 50 {
		t.Errorf("%v scans for 50 images", n)
	}
}

func TestHangingRegistryTimesTheScanOutWithoutLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Run("scan", func(t *testing.T) {
		cfg := testenv.ScanDefaults()
		cfg.Scan.Scans.ScanTimeout = 300 * time.Millisecond
		env := testenv.Start(t, cfg)
		ref, d := env.PushSample(t, "s/hang:1", "clean")
		pinned := strings.Split(ref, ":1")[0] + "@" + d // no digest resolution: only the scan meets the hang
		env.Registry.SetFault(devregistry.Hang)
		v := settle(t, env, pinned)[0]
		if v.Status != answer.ScanFailed || !strings.Contains(v.Reason, "took longer than 300ms") {
			t.Errorf("%s %q", v.Status, v.Reason)
		}
		if n := testutil.ToFloat64(env.Metrics.Scans.Failures.WithLabelValues("timeout")); n != 1 {
			t.Errorf("%v timeouts counted", n)
		}
		env.Registry.SetFault(devregistry.NoFault)
	})
	goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

func TestRegistryGoneMidScanFailsTheScan(t *testing.T) {
	cfg := testenv.ScanDefaults()
	env := testenv.Start(t, cfg)
	ref, d := env.PushSample(t, "s/gone:1", "critical")
	pinned := strings.Split(ref, ":1")[0] + "@" + d
	env.Registry.SetDelay(200 * time.Millisecond)
	ask(t, env, pinned) // the scan starts and waits on the slow registry
	time.Sleep(50 * time.Millisecond)
	env.StopRegistry()
	v := settle(t, env, pinned)[0]
	if v.Status != answer.ScanFailed || !strings.Contains(v.Reason, "could not be read from its registry") {
		t.Errorf("%s %q", v.Status, v.Reason)
	}
}

func TestFailedScanIsRetriedAfterItsLifetime(t *testing.T) {
	cfg := testenv.ScanDefaults()
	cfg.Scan.Scans.FailedTTL = 200 * time.Millisecond
	env := testenv.Start(t, cfg)
	ref, d := env.PushSample(t, "s/later:1", "critical")
	pinned := strings.Split(ref, ":1")[0] + "@" + d
	env.Registry.SetFault(devregistry.ServerError)
	if v := settle(t, env, pinned)[0]; v.Status != answer.ScanFailed {
		t.Fatalf("%s %q", v.Status, v.Reason)
	}
	env.Registry.SetFault(devregistry.NoFault)
	if v := ask(t, env, pinned)[0]; v.Status != answer.ScanFailed {
		t.Errorf("within its lifetime the failure is served: %s", v.Status)
	}
	time.Sleep(250 * time.Millisecond)
	if v := settle(t, env, pinned)[0]; v.Status != answer.Rejected {
		t.Errorf("after its lifetime the image is scanned again: %s %q", v.Status, v.Reason)
	}
}

func TestNewDatabaseRescansWhileServingTheOldReport(t *testing.T) {
	env := testenv.Start(t, testenv.ScanDefaults())
	ref, _ := env.PushSample(t, "s/rescan:1", "high")
	if v := settle(t, env, ref)[0]; v.Status != answer.Accepted {
		t.Fatalf("%s %q", v.Status, v.Reason)
	}
	path := filepath.Join(t.TempDir(), "newer.db")
	vulns := append(append([]samples.Vuln(nil), samples.Vulns...),
		samples.Vuln{ID: "MOAT-TEST-0099", Package: "moat-sample-high", Fixed: "9.0.0", Severity: "critical"})
	if err := samples.WriteDBOf(path, vulns); err != nil {
		t.Fatal(err)
	}
	if err := env.DB.Load(path); err != nil {
		t.Fatal(err)
	}
	if v := ask(t, env, ref)[0]; v.Status != answer.Accepted {
		t.Errorf("right after the swap the old report is served: %s", v.Status)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := ask(t, env, ref)[0]
		if v.Status == answer.Rejected && strings.Contains(v.Reason, "MOAT-TEST-0099") && v.Scanner.DB.ID == env.DB.Current() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not re-scanned with the new database: %s %q", v.Status, v.Reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPrivateRegistryScansWithTheResolversCredentials(t *testing.T) {
	cfg := testenv.ScanDefaults()
	cfg.Scan.Scans.FailedTTL = 100 * time.Millisecond
	auth := filepath.Join(t.TempDir(), ".dockerconfigjson")
	cfg.Registry.RegistryConfig = auth // read on use, so written below once the host is known
	env := testenv.Start(t, cfg)
	ref, d := env.PushSample(t, "private/app:1", "critical")
	pinned := strings.Split(ref, ":1")[0] + "@" + d
	env.Registry.SetBasicAuth("moat", "s3cret")
	writeAuth := func(password string) {
		b64 := base64.StdEncoding.EncodeToString([]byte("moat:" + password))
		if err := os.WriteFile(auth, []byte(`{"auths":{"`+env.RegistryHost+`":{"auth":"`+b64+`"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeAuth("wrong")
	if v := settle(t, env, pinned)[0]; v.Status != answer.ScanFailed || !strings.Contains(v.Reason, "401") && !strings.Contains(strings.ToLower(v.Reason), "unauthorized") {
		t.Errorf("wrong credentials: %s %q", v.Status, v.Reason)
	}
	writeAuth("s3cret")
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := ask(t, env, pinned)[0]
		if v.Status == answer.Rejected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the right credentials: %s %q", v.Status, v.Reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAttestedReportFirstThenTheEmbeddedScanner(t *testing.T) {
	key := testenv.NewKeySigner(t)
	cfg := testenv.WithSignatureKeys(testenv.ScanDefaults(), key.PubFile)
	cfg.Scan.Attestations = true
	env := testenv.Start(t, cfg)

	// The image itself is clean; CI's attested report says otherwise, and wins.
	attested, d := env.PushSample(t, "s/attested:1", "clean")
	ref, err := name.NewDigest(strings.Split(attested, ":1")[0]+"@"+d, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	report := `{"matches":[{"vulnerability":{"id":"CVE-2026-1111","severity":"Critical","fix":{"versions":["1.2.4"],"state":"fixed"}},"artifact":{"name":"openssl","version":"1.2.3"}}]}`
	key.Attest(t, ref, "vuln", testenv.VulnPredicate("https://github.com/anchore/grype", report, time.Now()))
	scanned, _ := env.PushSample(t, "s/scanned:1", "critical")

	vs := settle(t, env, attested, scanned)
	if v := vs[0]; v.Status != answer.Rejected || !strings.Contains(v.Reason, "CVE-2026-1111") || !strings.HasPrefix(v.Scanner.Name, "attestation: ") {
		t.Errorf("attested image: %s %q by %+v", v.Status, v.Reason, v.Scanner)
	}
	if v := vs[1]; v.Status != answer.Rejected || !strings.Contains(v.Reason, "MOAT-TEST-0001") || v.Scanner.Name != "grype" {
		t.Errorf("image without an attestation, scanned: %s %q by %+v", v.Status, v.Reason, v.Scanner)
	}
}

// A CVE a new database brings to an image already scanned gets its grace,
// dated the same on every replica that shares the tier and after a
// restart; a replica without the shared tier knows no first scan and is
// stricter, never more lenient.
func TestANewCVEGetsItsGraceOnEveryReplicaAndNeverMoreWithoutTheSharedTier(t *testing.T) {
	r := testenv.StartRedis(t)
	dir := t.TempDir()
	dbA, dbB := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	if err := samples.WriteDB(dbA); err != nil {
		t.Fatal(err)
	}
	if err := samples.WriteDBOf(dbB, samples.WithLater()); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.ScanDefaults()
	cfg.Shared = shared.Options{URL: r.URL, PasswordFile: r.PasswordFile, MACKeyFile: r.MACKeyFile, Prefix: "moat:", Budget: 250 * time.Millisecond}
	cfg.Scan.Scans.Policy = scan.Policy{Max: map[string]int{"critical": 0}, Grace: map[string]time.Duration{"critical": 72 * time.Hour}, MaxFindings: 50}
	cfg.Scan.Engine.DBPath = dbA

	env := testenv.Start(t, cfg)
	ref, _ := env.PushSample(t, "s/clean:1", "clean")
	before := settle(t, env, ref)[0]
	if before.Status != answer.Accepted || before.FirstScanned == "" {
		t.Fatalf("under database A: %s %q, first scanned %q", before.Status, before.Reason, before.FirstScanned)
	}
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond))) // first-seen has whole seconds
	if err := env.DB.Load(dbB); err != nil {
		t.Fatal(err)
	}
	var after value
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if after = ask(t, env, ref)[0]; after.Scanner.DB.ID == env.DB.Current() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not re-scanned with database B: %+v", after.Scan)
		}
	}
	found := findingOf(after, samples.Later.ID)
	if after.Status != answer.Accepted || !strings.Contains(after.Reason, "in their grace period: "+samples.Later.ID) || found == nil ||
		found.FirstSeen <= after.FirstScanned || after.FirstScanned != before.FirstScanned || found.Published != "2026-11-30T00:00:00Z" {
		t.Fatalf("under database B: %s %q, first scanned %q, finding %+v", after.Status, after.Reason, after.FirstScanned, found)
	}

	// Another replica (or this one restarted) on database B, with the
	// reports gone from Redis so that it scans itself: the same dates.
	rdb := r.Client()
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "moat:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "moat:firstseen:") {
			rdb.Del(context.Background(), k)
		}
	}
	cfg.Scan.Engine.DBPath = dbB
	other := testenv.Start(t, cfg)
	ref2, _ := other.PushSample(t, "s/clean:1", "clean")
	v := settle(t, other, ref2)[0]
	if f := findingOf(v, samples.Later.ID); v.Status != answer.Accepted || v.FirstScanned != before.FirstScanned || f == nil || f.FirstSeen != found.FirstSeen {
		t.Errorf("another replica: %s %q, first scanned %q, finding %+v; want the first replica's dates", v.Status, v.Reason, v.FirstScanned, f)
	}
	if n := testutil.ToFloat64(other.Metrics.Scans.Done.WithLabelValues(answer.Accepted)); n != 1 {
		t.Errorf("the other replica made %v scans; want its own one", n)
	}

	// Without the shared tier a fresh replica met the image just now: the
	// CVE was there at its first scan, so no grace, and the image is
	// rejected.
	cfg.Shared = shared.Options{}
	alone := testenv.Start(t, cfg)
	ref3, _ := alone.PushSample(t, "s/clean:1", "clean")
	if v := settle(t, alone, ref3)[0]; v.Status != answer.Rejected || !strings.Contains(v.Reason, samples.Later.ID+" (critical, moat-sample-high-free 1.0.0, fixed in 1.1.0)") {
		t.Errorf("without the shared tier: %s %q; want rejected naming the CVE", v.Status, v.Reason)
	}
}

func findingOf(v value, id string) *answer.Finding {
	for _, f := range v.Findings {
		if f.ID == id {
			return &f
		}
	}
	return nil
}
