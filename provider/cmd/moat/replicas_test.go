package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/provider/testenv/answertest"
)

// replicas is two `moat serve` processes and one `moat scanner` sharing
// one real redis-server, and a registry that counts blob downloads.
type replicas struct {
	t        *testing.T
	dir      string
	host     string
	redis    *testenv.Redis
	scanner  string
	scans    *serveProc // the scanner service
	args     []string
	a, b     *serveProc
	c        *http.Client
	mu       sync.Mutex
	blobGETs map[string]int
	// held holds blob downloads of app/held until it is closed.
	held chan struct{}
}

func startReplicas(t *testing.T, extra ...string) *replicas {
	r := &replicas{t: t, dir: devCerts(t), blobGETs: map[string]int{}, held: make(chan struct{})}
	reg := devregistry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.mu.Lock()
			r.blobGETs[req.URL.Path]++
			r.mu.Unlock()
			if strings.HasPrefix(req.URL.Path, "/v2/app/held/") {
				select {
				case <-r.held:
				case <-req.Context().Done():
					return
				}
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(func() { r.release(); srv.Close() })
	r.host = strings.TrimPrefix(srv.URL, "http://")
	var startScanner func() *serveProc
	r.scanner, startScanner = scannerService(t, r.dir, r.host)
	r.scans = startScanner()
	r.redis = testenv.StartRedis(t, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
	r.args = append([]string{"--insecure-registries", r.host, "--scanner", "service",
		"--scanner-url", "https://" + r.scanner, "--scanner-ca", filepath.Join(r.dir, "ca.crt"),
		"--scanner-cert", filepath.Join(r.dir, "client.crt"), "--scanner-key", filepath.Join(r.dir, "client.key"),
		// A budget a loaded CI machine keeps: a call past it is a miss, and
		// the replica would then scan on its own.
		"--scan-failed-ttl", "1s", "--redis-budget", "250ms"}, append(r.redis.Args("moat:"), extra...)...)
	r.a, r.b = r.start(), r.start()
	r.c = certClient(t, r.dir)
	r.c.Timeout = 3 * time.Second // the validation Provider's timeout in the chart
	return r
}

func (r *replicas) start() *serveProc { return startServe(r.t, r.dir, r.args...) }

// release lets downloads of app/held through.
func (r *replicas) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.held:
	default:
		close(r.held)
	}
}

// value asks p about key once.
func (r *replicas) value(p *serveProc, key string) (json.RawMessage, error) {
	resp, _, err := client.Lookup(context.Background(), r.c, p.url+"/validate", []string{key})
	if err != nil {
		return nil, err
	}
	if resp.Response.SystemError != "" || len(resp.Response.Items) != 1 {
		return nil, fmt.Errorf("%s: system error %q, %d items", key, resp.Response.SystemError, len(resp.Response.Items))
	}
	it := resp.Response.Items[0]
	if it.Error != "" {
		return nil, fmt.Errorf("%s: %s", key, it.Error)
	}
	return it.Value, nil
}

// status waits until p answers key with one of want.
func (r *replicas) status(p *serveProc, key string, want ...string) json.RawMessage {
	r.t.Helper()
	return scanValue(r.t, r.c, p.url, key, want...)
}

// scanFields is an answer without its resolution: what the scan says.
func scanFields(t *testing.T, v json.RawMessage) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "digest"} {
		delete(m, k)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func scansDone(p *serveProc) int {
	return strings.Count(p.logs.String(), `"msg":"scan done"`)
}

func metric(t *testing.T, p *serveProc, name string) float64 {
	t.Helper()
	resp, err := http.Get(p.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(string(m[1]), 64)
	return f
}

// Two replicas behind one Service: 200 concurrent lookups of a new image,
// split across both, start one scan; both then answer the same report, and
// so does a replica restarted afterwards, at its first lookup.
func TestReplicasShareOneScanAndRememberItAcrossRestarts(t *testing.T) {
	r := startReplicas(t)
	img := pushSample(t, r.host, "app/critical:1", "critical")

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		p := r.a
		if i%2 == 1 {
			p = r.b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.value(p, img); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a lookup failed: %v", err)
	}
	va := r.status(r.a, img, "rejected")
	vb := r.status(r.b, img, "rejected")
	if fa, fb := scanFields(t, va), scanFields(t, vb); fa != fb {
		t.Errorf("the replicas' scan fields differ:\n%s\n%s", fa, fb)
	}
	if n := scansDone(r.a) + scansDone(r.b); n != 1 {
		t.Errorf("the replicas ran %d scans of one image, want 1", n)
	}
	if n := scansDone(r.scans); n != 1 {
		t.Errorf("the scanner service scanned the image %d times, want once", n)
	}
	r.mu.Lock()
	for path, n := range r.blobGETs {
		if n != 1 {
			t.Errorf("blob %s downloaded %d times, want once (one pull)", path, n)
		}
	}
	if len(r.blobGETs) == 0 {
		t.Error("the registry served no blob: nothing was scanned")
	}
	r.mu.Unlock()

	// A restarted replica answers its first lookup with the report.
	_ = r.a.cmd.Process.Kill()
	<-r.a.done
	started := time.Now()
	r.a = r.start()
	v, err := r.value(r.a, img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted replica: its first lookup answered %s after the process started", time.Since(started).Round(time.Millisecond))
	if a := answertest.Check(t, v); a.Scan == nil || a.Status != "rejected" {
		t.Errorf("the first answer after a restart: %s, want the report (rejected)", v)
	}
	if scansDone(r.a) != 0 {
		t.Error("the restarted replica scanned again")
	}
}

// A report rewritten in Redis is refused and counted; the replica answers
// from a scan of its own.
func TestATamperedReportIsRefused(t *testing.T) {
	r := startReplicas(t)
	img := pushSample(t, r.host, "app/critical:1", "critical")
	r.status(r.a, img, "rejected")
	raw := r.redis.Client()
	defer raw.Close()
	ctx := context.Background()
	keys, err := raw.Keys(ctx, "moat:check:scan:*:sha256:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("stored reports: %v %v", keys, err)
	}
	rec, err := raw.Get(ctx, keys[0]).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(rec, []byte(`"status":"rejected"`), []byte(`"status":"accepted"`), 1)
	if bytes.Equal(forged, rec) {
		t.Fatalf("no status in the stored report: %q", rec)
	}
	if err := raw.Set(ctx, keys[0], forged, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	// b never looked the image up: its first lookup reads Redis.
	v := r.status(r.b, img, "rejected", "accepted", "report_not_available")
	if a := answertest.Check(t, v); a.Status == "accepted" {
		t.Fatalf("the forged report was served: %s", v)
	}
	if n := metric(t, r.b, "moat_shared_rejected_total"); n < 1 {
		t.Errorf("moat_shared_rejected_total = %v, want the forged value counted", n)
	}
	r.status(r.b, img, "rejected")
	if scansDone(r.b) != 1 {
		t.Errorf("replica b ran %d scans, want 1 of its own", scansDone(r.b))
	}
}

// With lookups running against both replicas, Redis is stopped, killed,
// restarted empty and filled up: every request is answered within the
// Provider's timeout, the vulnerable image is never accepted, and both
// replicas give the same answers again once Redis is back.
func TestRedisFaultsUnderLoad(t *testing.T) {
	// Short lifetimes, so digests and reports go through Redis (and images
	// are scanned again) while it fails.
	r := startReplicas(t, "--digest-ttl", "300ms", "--report-ttl", "1s")
	critical := pushSample(t, r.host, "app/critical:1", "critical")
	clean := pushSample(t, r.host, "app/clean:1", "clean")
	r.status(r.a, critical, "rejected")
	r.status(r.a, clean, "accepted")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failures, accepted, requests int
	var mu sync.Mutex
	for _, p := range []*serveProc{r.a, r.b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				for _, key := range []string{critical, clean} {
					v, err := r.value(p, key)
					mu.Lock()
					requests++
					if err != nil {
						failures++
						t.Logf("%s at %s: %v", key, p.url, err)
					} else if key == critical && answertest.Check(t, v).Status == "accepted" {
						accepted++
					}
					mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	pause := func() { time.Sleep(400 * time.Millisecond) }

	r.redis.Pause() // connections open, nothing answers
	pause()
	pause()
	r.redis.Resume()
	pause()
	r.redis.Kill()
	pause()
	r.redis.Start() // empty
	pause()
	// Full: writes are refused, reads answer.
	fill := r.redis.Client()
	if err := fill.ConfigSet(context.Background(), "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	pause()
	if err := fill.ConfigSet(context.Background(), "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	fill.Close()
	pause()
	stop()
	wg.Wait()

	if failures > 0 {
		t.Errorf("%d of %d requests failed or outlived the Provider's timeout while Redis failed", failures, requests)
	}
	if accepted > 0 {
		t.Errorf("the vulnerable image was answered accepted %d times", accepted)
	}
	t.Logf("%d requests while Redis was stopped, killed, restarted empty and full: %d failed, %d answered accepted for the vulnerable image", requests, failures, accepted)
	if requests < 20 {
		t.Errorf("only %d requests ran during the faults", requests)
	}
	// Converged: both replicas answer the same reports again.
	for _, key := range []string{critical, clean} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			va, ea := r.value(r.a, key)
			vb, eb := r.value(r.b, key)
			if ea == nil && eb == nil && scanFields(t, va) == scanFields(t, vb) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the replicas still differ after Redis returned:\n%s\n%s", key, va, vb)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// A replica that dies while it holds a scan's lease lets the work go when
// the lease ends (the scan timeout and 10 s): the other replica then scans.
func TestALeaseOfADeadReplicaIsTakenOver(t *testing.T) {
	r := startReplicas(t, "--scan-timeout", "2s")
	img := pushSample(t, r.host, "app/held:1", "clean")
	if _, err := r.value(r.a, img); err != nil { // a takes the lease; its pull hangs
		t.Fatal(err)
	}
	raw := r.redis.Client()
	defer raw.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, _ := raw.Keys(context.Background(), "moat:lease:check:scan:*").Result()
		if len(keys) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lease taken: %v", keys)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = r.a.cmd.Process.Kill()
	<-r.a.done
	r.release()
	// b waits for the dead replica's lease to end, then scans itself.
	deadline = time.Now().Add(40 * time.Second)
	for {
		v, err := r.value(r.b, img)
		if err == nil && answertest.Check(t, v).Status == "accepted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b never scanned after a's death: %s %v", v, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := scansDone(r.b); n != 1 {
		t.Errorf("b ran %d scans, want 1", n)
	}
}
