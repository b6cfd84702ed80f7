// Package admission_test measures what users pay for Moat on the real path
// (make bench-admission): the API server's admission of pods with Moat's
// templates, constraints and Providers installed against without, with
// Gatekeeper's ValidatingAdmissionPolicy generation on (its default) and
// off, and Gatekeeper's audit over thousands of existing pods. It uses the
// e2e harness: a real API server, etcd, controller manager and Gatekeeper,
// and a local `moat serve`. It prints figures and asserts no timing.
package admission_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/e2e/cluster"
)

const root = "../.."

var (
	podsPerRun = flag.Int("pods", 400, "pods admitted (server-side dry run) per measurement")
	workers    = flag.Int("workers", 4, "concurrent clients for the throughput runs (the latency runs have one)")
	auditPods  = flag.Int("audit-pods", 5000, "pods in the API server for the audit measurement")
	profile    = flag.String("apiserver-profile", "", "write the API server's CPU profile while it admits pods with Moat installed to this file (one per VAP setting)")
)

// values are the chart settings measured: the Defender set enforced, Pod
// Security restricted on trial, digests pinned, scans decided in prod.
const values = `
mutation: {pinDigests: true}
policies:
  defender:
    enabled: true
    enforcementAction: deny
    allowedImagesRegex: '^(contoso\.azurecr\.io|127\.0\.0\.1:[0-9]+)/.+$'
  podSecurity: {level: restricted, enforcementAction: dryrun}
imagePolicy:
  enabled: true
  defaultPolicy: accept
  byNamespace:
    prod: {defaultPolicy: scan-result, admitRunning: true}
`

// BenchmarkAdmission admits pods into prod without Moat, then with it, once
// with Gatekeeper's VAP generation on and once off; then the unhealthy
// sample Deployment, denied through expansion. One iteration: run it with
// -benchtime 1x.
func BenchmarkAdmission(b *testing.B) {
	bins, moatBin := build(b)
	for _, vap := range []bool{true, false} {
		name := "VAP=on"
		if !vap {
			name = "VAP=off"
		}
		b.Run(name, func(b *testing.B) {
			h := start(b, bins, moatBin, cluster.GatekeeperOptions{ProviderCacheTTL: 3 * time.Minute, NoVAP: !vap})
			pod := func(i int) error {
				_, err := h.client.CoreV1().Pods("prod").Create(context.Background(),
					cluster.HealthyPod("prod", fmt.Sprintf("p%d", i), h.image, "100m", "64Mi"), dryRun)
				return err
			}
			without := measure(b, *podsPerRun, pod, nil)
			h.install(b)
			profiled := h.profileAPIServer(b, name)
			with := measure(b, *podsPerRun, pod, nil)
			profiled()
			var bad appsv1.Deployment
			raw, err := os.ReadFile(filepath.Join(root, "gator-suites", "defender-samples", "unhealthy-deployment-shop.yaml"))
			if err != nil {
				b.Fatal(err)
			}
			if err := yaml.Unmarshal(raw, &bad); err != nil {
				b.Fatal(err)
			}
			deployment := func(i int) error {
				d := bad.DeepCopy()
				d.Name = fmt.Sprintf("unhealthy-%d", i)
				_, err := h.client.AppsV1().Deployments("shop").Create(context.Background(), d, dryRun)
				return err
			}
			denied := measure(b, *podsPerRun/4, deployment, func(err error) bool {
				return err != nil && strings.Contains(err.Error(), "[Implied by ")
			})
			fmt.Printf("\nAdmission, %s: %d objects per run, server-side dry run, 2 cores shared by everything\n", name, *podsPerRun)
			fmt.Printf("  %-52s %20s %31s\n", "", "one client", fmt.Sprintf("%d clients", *workers))
			fmt.Printf("  %-52s %9s %9s %9s %9s %9s %s\n", "", "p50", "p99", "per s", "p50", "p99", "failures")
			without.print("pods, Gatekeeper without Moat")
			with.print("pods, Moat installed (admitted, digest pinned)")
			denied.print("unhealthy sample Deployments (denied by expansion)")
			fmt.Printf("  added by Moat, one client: p50 %s, p99 %s\n", (with.one.p50 - without.one.p50).Round(100*time.Microsecond), (with.one.p99 - without.one.p99).Round(100*time.Microsecond))
		})
	}
}

// BenchmarkAudit creates -audit-pods pods in prod, installs Moat, and
// reports Gatekeeper's audit cycles over them with the whole pack: time per
// cycle, and the Gatekeeper process's CPU and memory.
func BenchmarkAudit(b *testing.B) {
	bins, moatBin := build(b)
	h := start(b, bins, moatBin, cluster.GatekeeperOptions{ProviderCacheTTL: 3 * time.Minute, AuditInterval: 30 * time.Second})
	created := admit(b, *auditPods, *workers, func(i int) error {
		_, err := h.client.CoreV1().Pods("prod").Create(context.Background(),
			cluster.HealthyPod("prod", fmt.Sprintf("p%d", i), h.image, "100m", "64Mi"), metav1.CreateOptions{})
		return err
	}, nil)
	h.install(b)
	pid := h.gk.Proc.PID()
	fmt.Printf("\nAudit: %d pods (created at %.0f/s), %d constraints, audit every 30s, 2 cores shared by everything\n", *auditPods, created.perSecond, h.constraints)
	fmt.Printf("  %-8s %10s %14s %12s %12s\n", "cycle", "duration", "Gatekeeper CPU", "RSS at end", "peak RSS")
	// Cycles run back to back when one outlasts the interval. The cycle
	// under way when the pack was installed is not measured: the first
	// measured one starts when that one ends.
	count, _ := auditHistogram(b, h.gk.Metrics)
	count, sum := nextAudit(b, h.gk.Metrics, count)
	for cycle := 1; cycle <= 2; cycle++ {
		cpu0 := processCPU(b, pid)
		var sum1 float64
		count, sum1 = nextAudit(b, h.gk.Metrics, count)
		rss, peak := memory(b, pid)
		fmt.Printf("  %-8d %10s %14s %9.0f MiB %9.0f MiB\n", cycle, time.Duration((sum1-sum)*float64(time.Second)).Round(time.Millisecond),
			(processCPU(b, pid) - cpu0).Round(time.Millisecond), rss/1024, peak/1024)
		sum = sum1
	}
	fmt.Println("  (CPU: the Gatekeeper process's from the previous cycle's end to this one's: the audit, and the idle webhook)")
}

// auditHistogram is the count and sum of Gatekeeper's audit durations.
func auditHistogram(b *testing.B, url string) (count, sum float64) {
	m := metrics(b, url)
	return m["gatekeeper_audit_duration_seconds_count"], m["gatekeeper_audit_duration_seconds_sum"]
}

// nextAudit waits until an audit cycle after the count-th has finished.
func nextAudit(b *testing.B, url string, count float64) (float64, float64) {
	var c, s float64
	err := cluster.Poll(context.Background(), 15*time.Minute, func() error {
		if c, s = auditHistogram(b, url); c <= count {
			return fmt.Errorf("audit cycle %.0f has not finished", count+1)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return c, s
}

var dryRun = metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

func build(b *testing.B) (*cluster.Binaries, string) {
	bins, err := cluster.Build(root, os.Stderr)
	if err != nil {
		b.Fatal(err)
	}
	moatBin := filepath.Join(b.TempDir(), "moat")
	cmd := exec.Command("go", "build", "-o", moatBin, "./provider/cmd/moat")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build moat: %v\n%s", err, out)
	}
	return bins, moatBin
}

// harness is one control plane with Gatekeeper, a registry holding the
// measured image, and the namespaces.
type harness struct {
	dir, moatBin, image string
	cl                  *cluster.Cluster
	gk                  *cluster.Gatekeeper
	client              kubernetes.Interface
	constraints         int
}

func start(b *testing.B, bins *cluster.Binaries, moatBin string, opts cluster.GatekeeperOptions) *harness {
	ctx := context.Background()
	h := &harness{dir: b.TempDir(), moatBin: moatBin}
	var err error
	if h.cl, err = cluster.Start(ctx, bins, h.dir); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.cl.Stop)
	if h.gk, err = h.cl.StartGatekeeper(ctx, opts); err != nil {
		b.Fatal(err)
	}
	cfg := rest.CopyConfig(h.cl.Config)
	cfg.QPS, cfg.Burst = 1000, 1000 // the client is not what is measured
	if h.client, err = kubernetes.NewForConfig(cfg); err != nil {
		b.Fatal(err)
	}
	registry := testenv.StartRegistry(b)
	h.image, _ = testenv.PushSampleTo(b, registry, "app/web:v1", "clean")
	for _, ns := range []string{"shop", "prod"} {
		if _, err := h.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := cluster.Poll(ctx, 30*time.Second, func() error {
			_, err := h.client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	return h
}

// install starts moat serve, applies what the chart renders for Gatekeeper
// with the Providers pointed at it, applies the constraints as the chart's
// hook does (moat constraints), and waits until a pod of the measured image
// is admitted (its scan accepted, the provider warm) and a bad one denied.
func (h *harness) install(b *testing.B) {
	ctx := context.Background()
	certs, db := filepath.Join(h.dir, "moat-certs"), filepath.Join(h.dir, "vulnerability.db")
	run(b, h.moatBin, "dev-certs", "--out", certs, "--validity", "24h")
	run(b, h.moatBin, "dev-vulndb", "--out", db)
	addrs, err := cluster.FreeAddrs(2)
	if err != nil {
		b.Fatal(err)
	}
	registry := strings.SplitN(h.image, "/", 2)[0]
	p, err := cluster.StartProc(h.dir, "moat-serve", h.moatBin, "serve", "--addr", addrs[0], "--metrics-addr", addrs[1],
		"--tls-cert", filepath.Join(certs, "tls.crt"), "--tls-key", filepath.Join(certs, "tls.key"),
		"--client-ca", filepath.Join(h.gk.CertDir, "ca.crt"), "--insecure-registries", registry,
		"--scanner", "embedded", "--db-path", db, "--db-dir", filepath.Join(h.dir, "vulndb"))
	if err != nil {
		b.Fatal(err)
	}
	h.cl.Procs = append(h.cl.Procs, p)
	if err := p.WaitFor("ready", 30*time.Second, func() error { return cluster.HTTPOK("http://" + addrs[1] + "/readyz") }); err != nil {
		b.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		b.Fatal(err)
	}

	objs, err := cluster.RenderChart(root, h.dir, h.cl.KubeVersion(), values)
	if err != nil {
		b.Fatal(err)
	}
	a, err := h.cl.Applier()
	if err != nil {
		b.Fatal(err)
	}
	constraintsDir := filepath.Join(h.dir, "constraints")
	if err := os.MkdirAll(constraintsDir, 0o755); err != nil {
		b.Fatal(err)
	}
	var apply []*unstructured.Unstructured
	for _, o := range objs {
		group := strings.Split(o.GetAPIVersion(), "/")[0]
		switch {
		case o.GetKind() == "ConfigMap" && o.GetName() == "moat-constraints":
			files, _, _ := unstructured.NestedStringMap(o.Object, "data")
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(constraintsDir, name), []byte(data), 0o644); err != nil {
					b.Fatal(err)
				}
				cs, err := cluster.Decode([]byte(data))
				if err != nil {
					b.Fatal(err)
				}
				h.constraints += len(cs)
			}
		case !strings.HasSuffix(group, "gatekeeper.sh"):
			// The provider's Deployment and Service: moat serve runs locally.
		case o.GetKind() == "Provider":
			_ = unstructured.SetNestedField(o.Object, "https://"+addrs[0]+cluster.ProviderPath(o), "spec", "url")
			_ = unstructured.SetNestedField(o.Object, base64.StdEncoding.EncodeToString(ca), "spec", "caBundle")
			apply = append([]*unstructured.Unstructured{o}, apply...)
		default:
			apply = append(apply, o)
		}
	}
	for _, o := range apply {
		if _, err := a.Apply(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	run(b, h.moatBin, "constraints", "--kubeconfig", h.cl.Kubeconfig, "--release", "moat", "--from", constraintsDir, "--timeout", "3m")

	err = cluster.Poll(ctx, 3*time.Minute, func() error {
		bad := cluster.HealthyPod("prod", "warm-up-bad", h.image, "100m", "64Mi")
		bad.Spec.HostPID = true
		if _, err := h.client.CoreV1().Pods("prod").Create(ctx, bad, dryRun); err == nil || !strings.Contains(err.Error(), "defender-host-namespaces") {
			return fmt.Errorf("a pod sharing the host's PID namespace is not denied yet: %v", err)
		}
		pod, err := h.client.CoreV1().Pods("prod").Create(ctx, cluster.HealthyPod("prod", "warm-up", h.image, "100m", "64Mi"), dryRun)
		if err != nil {
			return err
		}
		if !strings.Contains(pod.Spec.Containers[0].Image, "@sha256:") {
			return fmt.Errorf("the image is not pinned yet: %s", pod.Spec.Containers[0].Image)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// profileAPIServer starts a CPU profile of the API server, if asked, and
// returns what waits for it and writes it.
func (h *harness) profileAPIServer(b *testing.B, name string) func() {
	if *profile == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := h.client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "15").DoRaw(context.Background())
		if err == nil {
			err = os.WriteFile(*profile+"."+strings.NewReplacer("=", "-").Replace(name), raw, 0o644)
		}
		if err != nil {
			b.Logf("the API server's profile: %v", err)
		}
	}()
	return func() { <-done }
}

func run(b *testing.B, bin string, args ...string) {
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		b.Fatalf("moat %s: %v\n%s", args[0], err, out)
	}
}

type result struct {
	perSecond      float64
	p50, p99       time.Duration
	failures, want int
}

// latencyAndLoad is one admission measured twice: one client at a time
// (the latency a user sees) and -workers clients (throughput).
type latencyAndLoad struct{ one, many result }

func measure(b *testing.B, n int, create func(i int) error, ok func(error) bool) latencyAndLoad {
	return latencyAndLoad{one: admit(b, n, 1, create, ok), many: admit(b, n, *workers, create, ok)}
}

func (r latencyAndLoad) print(what string) {
	ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	fmt.Printf("  %-52s %9s %9s %9.1f %9s %9s %d of %d\n", what, ms(r.one.p50), ms(r.one.p99),
		r.many.perSecond, ms(r.many.p50), ms(r.many.p99), r.one.failures+r.many.failures, r.one.want+r.many.want)
}

// admit calls create n times from clients goroutines and times each call.
// ok decides what counts as the expected outcome (nil: no error).
func admit(b *testing.B, n, clients int, create func(i int) error, ok func(error) bool) result {
	if ok == nil {
		ok = func(err error) bool { return err == nil }
	}
	var next, failures atomic.Int64
	lat := make([]time.Duration, n)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				err := create(i)
				lat[i] = time.Since(t0)
				if !ok(err) {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if e := firstErr.Load(); e != nil {
		b.Logf("%d of %d not as expected; the first: %s", failures.Load(), n, e)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return result{perSecond: float64(n) / elapsed.Seconds(), p50: lat[n/2], p99: lat[n*99/100], failures: int(failures.Load()), want: n}
}

// metrics reads the samples of a Prometheus text page by metric name (the
// metrics read here have one sample each).
func metrics(b *testing.B, url string) map[string]float64 {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 { // labels: the scope's, on an unlabelled metric
			name, value = name[:i], sc.Text()[strings.LastIndexByte(sc.Text(), ' ')+1:]
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// processCPU is pid's user+system CPU time, from /proc.
func processCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

// memory is pid's resident set now and at its peak, in KiB.
func memory(b *testing.B, pid int) (rss, peak float64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak
}
