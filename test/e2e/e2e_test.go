// The whole admission path: a real API server calls Gatekeeper's webhooks
// with their real budgets and failure policies, and Gatekeeper calls
// `moat serve` over mutual TLS with its own client certificate, for the
// policies a user installs from Moat's chart. See README.md here.
package e2e_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/e2e/cluster"
)

const root = "../.."

// Short, so that answers and audits change within a test: Gatekeeper's
// external-data cache, its audit interval, and the provider's digest cache.
const (
	providerCacheTTL = 2 * time.Second
	auditInterval    = 2 * time.Second
	digestTTL        = time.Second
)

// e2e is everything one run shares.
type e2e struct {
	cl       *cluster.Cluster
	gk       *cluster.Gatekeeper
	apply    *cluster.Applier
	client   kubernetes.Interface
	warnings *cluster.Warnings
	registry string // 127.0.0.1:port
	moat     *cluster.Proc
	moatURL  string
	moatOps  string // its metrics URL
	// serveArgs start a replica of moat serve: all but its addresses.
	serveArgs []string
	moatBin   string
	redis     *testenv.Redis
	providers []*unstructured.Unstructured // as applied
	// constraints are the chart's, as rendered.
	constraints []*unstructured.Unstructured
	slowScan    chan struct{} // closed to let scans of scan/slow read their layers
	releaseOnce sync.Once
	certs       string // moat dev-certs' files
	reportAddr  string // node-report address of the replica started last
	moatReports string // the first replica's
}

func (e *e2e) releaseSlowScan() { e.releaseOnce.Do(func() { close(e.slowScan) }) }

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the end-to-end run builds and starts a control plane")
	}
	ctx := context.Background()
	bins, err := cluster.Build(root, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Kubernetes %s, Gatekeeper %s", bins.KubeVersion, bins.GatekeeperVersion)

	// Logs are kept when the test fails.
	dir, err := os.MkdirTemp("", "moat-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{}
	t.Cleanup(func() {
		var procs []*cluster.Proc
		if e.cl != nil {
			e.cl.Stop()
			procs = e.cl.Procs
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("the end of %s:\n%s", p.Log, p.Tail(3000))
			}
			t.Logf("logs and certificates kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})

	// moat is built from this tree while the control plane starts.
	moatBin := filepath.Join(dir, "moat", "moat")
	built := make(chan error, 1)
	go func() {
		build := exec.Command("go", "build", "-o", moatBin, "./provider/cmd/moat")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			built <- fmt.Errorf("go build moat: %v\n%s", err, out)
		}
		close(built)
	}()

	start := time.Now()
	if e.cl, err = cluster.Start(ctx, bins, dir); err != nil {
		t.Fatal(err)
	}
	if e.gk, err = e.cl.StartGatekeeper(ctx, cluster.GatekeeperOptions{ProviderCacheTTL: providerCacheTTL, AuditInterval: auditInterval}); err != nil {
		t.Fatal(err)
	}
	if e.apply, err = e.cl.Applier(); err != nil {
		t.Fatal(err)
	}
	// Admission warnings (enforcementAction warn) reach the client as
	// HTTP Warning headers; keep them to assert on.
	e.warnings = &cluster.Warnings{}
	cfg := rest.CopyConfig(e.cl.Config)
	cfg.WarningHandler = e.warnings
	if e.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane and Gatekeeper ready in %s", time.Since(start).Round(time.Millisecond))

	e.slowScan = make(chan struct{})
	e.registry = testenv.StartRegistryWith(t, holdBlobs("/v2/scan/slow/", e.slowScan))
	// Before the registry closes, which waits for requests it holds.
	t.Cleanup(e.releaseSlowScan)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	moatCA := e.startMoat(t, dir, moatBin)
	e.install(t, dir, moatCA)
	t.Logf("Moat installed and enforced %s after the start", time.Since(start).Round(time.Millisecond))

	// In order: the last one stops the provider.
	t.Run("DefenderSamplesThroughExpansion", e.defenderSamples)
	t.Run("ScanStatusPerNamespace", e.scanStatusPerNamespace)
	t.Run("PendingScanThenAdmitted", e.pendingScan)
	t.Run("DigestsPinnedAtAdmission", e.digestPinning)
	t.Run("PrivilegedEphemeralContainerDenied", e.ephemeralContainer)
	t.Run("AuditReportsDryrunViolations", e.auditDryrun)
	t.Run("UpdatesOfPodsAdmittedUnderDryrun", e.updatesAfterEnforcing)
	t.Run("PodSecurityStandardsVersion", e.podSecurityVersion)
	t.Run("PullSecretsFollowedThroughTheAPI", func(t *testing.T) { e.pullSecrets(t, dir) })
	t.Run("NamespaceCredentialsStayInTheirNamespace", func(t *testing.T) { e.namespaceCredentials(t, dir) })
	t.Run("NewCVEAuditedRunningWorkloadsAdmitted", func(t *testing.T) { e.newCVEs(t, dir) })
	t.Run("NodeVulnerabilitiesAudited", func(t *testing.T) { e.nodeVulnerabilities(t, dir) })
	t.Run("ReplicasShareReportsThroughRestarts", func(t *testing.T) { e.replicasShareState(t, dir) })
	t.Run("ProviderDown", e.providerDown)
}

// holdBlobs holds blob downloads (not pushes) under prefix until release
// is closed: a scan of such an image stays unfinished for as long as the
// test needs, while its digest still resolves.
func holdBlobs(prefix string, release <-chan struct{}) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, prefix) && strings.Contains(r.URL.Path, "/blobs/") {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// startMoat starts bin (`moat serve`) with the embedded scanner on the sample
// database, trusting Gatekeeper's CA for client certificates, and returns
// the CA of its serving certificate.
func (e *e2e) startMoat(t *testing.T, dir, bin string) []byte {
	t.Helper()
	moatDir := filepath.Dir(bin)
	// The serving certificate: for 127.0.0.1, where the Providers point.
	certs := filepath.Join(moatDir, "certs")
	if out, err := exec.Command(bin, "dev-certs", "--out", certs, "--validity", "24h").CombinedOutput(); err != nil {
		t.Fatalf("moat dev-certs: %v\n%s", err, out)
	}
	db := filepath.Join(moatDir, "vulnerability.db")
	if out, err := exec.Command(bin, "dev-vulndb", "--out", db).CombinedOutput(); err != nil {
		t.Fatalf("moat dev-vulndb: %v\n%s", err, out)
	}
	// The replicas share one redis-server, as the chart's two do.
	e.redis = testenv.StartRedis(t)
	e.moatBin = bin
	e.serveArgs = append([]string{
		"--tls-cert", filepath.Join(certs, "tls.crt"), "--tls-key", filepath.Join(certs, "tls.key"),
		// Gatekeeper's client certificate is its webhook certificate.
		"--client-ca", filepath.Join(e.gk.CertDir, "ca.crt"),
		"--insecure-registries", e.registry, "--digest-ttl", digestTTL.String(),
		"--scanner", "embedded", "--db-path", db, "--db-dir", filepath.Join(moatDir, "vulndb"),
		// A budget a loaded CI machine keeps (a call past it is a miss).
		"--redis-budget", "250ms",
		// Node scanners' reports, with the node-scan CA dev-certs writes.
		"--node-report-ca", filepath.Join(certs, "node-ca.crt")}, e.redis.Args("moat:")...)
	e.certs = certs
	e.moat, e.moatURL, e.moatOps = e.startReplica(t, dir, "moat-serve")
	e.moatReports = e.reportAddr
	ca, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// values are the chart settings a user running Moat for real might pick:
// the Defender set enforced, Pod Security restricted on trial (dryrun),
// digests pinned, and image scans decided per namespace.
const values = `
mutation: {pinDigests: true}
policies:
  defender:
    enabled: true
    enforcementAction: deny
    allowedImagesRegex: '^(contoso\.azurecr\.io|127\.0\.0\.1:[0-9]+)/.+$'
  podSecurity: {level: restricted, enforcementAction: dryrun}
nodeScan: {enabled: true}
imagePolicy:
  enabled: true
  defaultPolicy: accept
  byNamespace:
    prod: {defaultPolicy: scan-result, admitRunning: true}
    dev: {defaultPolicy: scan-result, enforcementAction: warn, reportPending: accept, scanFailed: accept, providerError: accept}
`

// startReplica starts a replica of moat serve on free addresses and
// returns it, its URL and its metrics URL once it is ready.
func (e *e2e) startReplica(t *testing.T, dir, name string) (*cluster.Proc, string, string) {
	t.Helper()
	return e.startReplicaWith(t, dir, name)
}

// startReplicaWith is startReplica with more settings.
func (e *e2e) startReplicaWith(t *testing.T, dir, name string, extra ...string) (*cluster.Proc, string, string) {
	t.Helper()
	addrs, err := cluster.FreeAddrs(3)
	if err != nil {
		t.Fatal(err)
	}
	addr, ops := addrs[0], addrs[1]
	args := append(append([]string{"serve", "--addr", addr, "--metrics-addr", ops, "--node-report-addr", addrs[2]}, e.serveArgs...), extra...)
	e.reportAddr = addrs[2]
	p, err := cluster.StartProc(dir, name, e.moatBin, args...)
	if err != nil {
		t.Fatal(err)
	}
	e.cl.Procs = append(e.cl.Procs, p)
	if err := p.WaitFor("ready", 30*time.Second, func() error { return cluster.HTTPOK("http://" + ops + "/readyz") }); err != nil {
		t.Fatal(err)
	}
	return p, "https://" + addr, "http://" + ops
}

// install renders the chart with values and applies what it holds for
// Gatekeeper (templates, expansion, constraints, mutators, Providers), the
// Providers pointed at the local `moat serve`; then waits until Gatekeeper
// enforces all of it.
func (e *e2e) install(t *testing.T, dir string, moatCA []byte) {
	t.Helper()
	ctx := context.Background()
	objs, err := cluster.RenderChart(root, dir, e.cl.KubeVersion(), values)
	if err != nil {
		t.Fatal(err)
	}

	for _, ns := range []string{"shop", "prod", "dev"} {
		e.createNamespace(t, ns)
	}

	var templates, constraints, rest []*unstructured.Unstructured
	constraintsDir := filepath.Join(dir, "constraints")
	for _, o := range objs {
		group := strings.Split(o.GetAPIVersion(), "/")[0]
		switch {
		case o.GetKind() == "ConfigMap" && o.GetName() == "moat-constraints":
			// What the chart's hook Job applies, with the same command
			// (moat constraints), once the templates are created.
			files, _, _ := unstructured.NestedStringMap(o.Object, "data")
			must(t, os.MkdirAll(constraintsDir, 0o755))
			for name, data := range files {
				must(t, os.WriteFile(filepath.Join(constraintsDir, name), []byte(data), 0o644))
				cs, err := cluster.Decode([]byte(data))
				must(t, err)
				constraints = append(constraints, cs...)
			}
		case !strings.HasSuffix(group, "gatekeeper.sh"):
			// The provider's Deployment, Service, Secret, PDB: no kubelet
			// here to run them; `moat serve` runs as a local process.
		case o.GetKind() == "Provider":
			must(t, unstructured.SetNestedField(o.Object, e.moatURL+cluster.ProviderPath(o), "spec", "url"))
			must(t, unstructured.SetNestedField(o.Object, base64.StdEncoding.EncodeToString(moatCA), "spec", "caBundle"))
			rest = append([]*unstructured.Unstructured{o}, rest...) // Providers first
			e.providers = append(e.providers, o)
		case o.GetKind() == "ConstraintTemplate":
			templates = append(templates, o)
		case group == "constraints.gatekeeper.sh":
			t.Fatalf("constraint %s is an object of the release: helm install cannot map its kind", o.GetName())
		default: // ExpansionTemplate, Assign
			rest = append(rest, o)
		}
	}
	e.constraints = constraints
	for _, o := range append(append([]*unstructured.Unstructured{}, rest...), templates...) {
		if _, err := e.apply.Apply(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The hook's command waits until Gatekeeper serves every constraint
	// kind (it has compiled the templates), then applies them.
	phase := time.Now()
	out, err := exec.Command(e.moatBin, "constraints", "--kubeconfig", e.cl.Kubeconfig, "--release", "moat",
		"--from", constraintsDir, "--timeout", "2m").CombinedOutput()
	if err != nil {
		t.Fatalf("moat constraints: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("%d constraints applied, 0 deleted", len(constraints)); !strings.Contains(string(out), want) {
		t.Fatalf("moat constraints: want %q:\n%s", want, out)
	}
	t.Logf("templates created and %d constraints applied by moat constraints in %s", len(constraints), time.Since(phase).Round(time.Millisecond))
	phase = time.Now()
	enforced := func(st map[string]any) bool {
		pods, _ := st["byPod"].([]any)
		for _, p := range pods {
			if p.(map[string]any)["enforced"] == true {
				return true
			}
		}
		return false
	}
	for _, o := range append(append([]*unstructured.Unstructured{}, constraints...), rest...) {
		// Providers, expansions and SyncSets report no enforcement status.
		if o.GetKind() != "Provider" && o.GetKind() != "ExpansionTemplate" && o.GetKind() != "SyncSet" {
			e.waitStatus(t, o, enforced)
		}
	}
	t.Logf("applied %d templates, %d constraints and %d other objects from the chart; constraints and mutators enforced in %s",
		len(templates), len(constraints), len(rest), time.Since(phase).Round(time.Millisecond))

	// Enforced in the status means loaded; the proof is a denial.
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		_, err := e.create(hostPID(healthyPod("prod", "readiness-probe", e.registry+"/never/pushed:v1")), true)
		if err == nil || !strings.Contains(err.Error(), "defender-host-namespaces") {
			return fmt.Errorf("a pod sharing the host's PID namespace is not denied yet: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitStatus polls obj until check holds for its status.
func (e *e2e) waitStatus(t *testing.T, obj *unstructured.Unstructured, check func(map[string]any) bool) {
	t.Helper()
	err := cluster.Poll(context.Background(), 60*time.Second, func() error {
		got, err := e.apply.Get(context.Background(), obj)
		if err != nil {
			return err
		}
		st, _, _ := unstructured.NestedMap(got.Object, "status")
		if !check(st) {
			return fmt.Errorf("%s %s: status %v", obj.GetKind(), obj.GetName(), st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *e2e) createNamespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := e.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The controller manager creates the default ServiceAccount, which
	// pod admission requires.
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		_, err := e.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// healthyPod passes the Defender set: limits, read-only root, no
// privilege, non-root, no capabilities, AppArmor and seccomp, no token.
func healthyPod(ns, name, image string) *corev1.Pod {
	return cluster.HealthyPod(ns, name, image, "100m", "64Mi")
}

// hostPID makes p share the node's PID namespace: one Defender rule
// broken, so one message whichever admission step denies it.
func hostPID(p *corev1.Pod) *corev1.Pod {
	p.Spec.HostPID = true
	return p
}

// create creates pod and returns the stored pod or the admission error.
func (e *e2e) create(pod *corev1.Pod, dryRun bool) (*corev1.Pod, error) {
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return e.client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, opts)
}

var denied = cluster.Denied

func (e *e2e) defenderSamples(t *testing.T) {
	ctx := context.Background()
	suite := filepath.Join(root, "gator-suites", "defender-samples")
	want := brokenRules(t, suite, "unhealthy-deployment-shop.yaml")
	if len(want) < 8 {
		t.Fatalf("the suite names only %d broken rules: %v", len(want), want)
	}

	var bad appsv1.Deployment
	readYAML(t, filepath.Join(suite, "unhealthy-deployment-shop.yaml"), &bad)
	_, err := e.client.AppsV1().Deployments("shop").Create(ctx, &bad, metav1.CreateOptions{})
	var names []string
	for _, c := range want {
		names = append(names, "["+c+"]")
	}
	denied(t, "the unhealthy sample Deployment", err, append(names, "[Implied by ")...)

	var good appsv1.Deployment
	readYAML(t, filepath.Join(suite, "healthy-deployment-shop.yaml"), &good)
	// Defender's documentation leaves the token unset in its healthy
	// sample; Moat reports that (see the suite), so set it as users must.
	good.Spec.Template.Spec.AutomountServiceAccountToken = ptr.To(false)
	if _, err := e.client.AppsV1().Deployments("shop").Create(ctx, &good, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the healthy sample Deployment: %v", err)
	}
	replicas := int(*good.Spec.Replicas)
	err = cluster.Poll(ctx, 60*time.Second, func() error {
		pods, err := e.client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{
			LabelSelector: labels.SelectorFromSet(good.Spec.Selector.MatchLabels).String()})
		if err != nil {
			return err
		}
		if len(pods.Items) != replicas {
			return fmt.Errorf("%d of %d pods created", len(pods.Items), replicas)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the controller manager's pods for the healthy Deployment: %v", err)
	}
}

// brokenRules reads the suite and returns the names of the constraints of
// constraints/defender/ that object breaks according to it.
func brokenRules(t *testing.T, suiteDir, object string) []string {
	t.Helper()
	var suite struct {
		Tests []struct {
			Constraint string
			Cases      []struct {
				Object     string
				Assertions []struct{ Violations any }
			}
		}
	}
	readYAML(t, filepath.Join(suiteDir, "suite.yaml"), &suite)
	seen := map[string]bool{}
	for _, tc := range suite.Tests {
		if !strings.Contains(tc.Constraint, "constraints/defender/") {
			continue
		}
		for _, c := range tc.Cases {
			// "violations: no" reads as false (YAML 1.1), as gator reads it.
			if v := c.Assertions; c.Object != object || len(v) == 0 || v[0].Violations == false || v[0].Violations == "no" {
				continue
			}
			var con struct{ Metadata struct{ Name string } }
			readYAML(t, filepath.Join(suiteDir, tc.Constraint), &con)
			seen[con.Metadata.Name] = true
		}
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (e *e2e) scanStatusPerNamespace(t *testing.T) {
	critical, _ := testenv.PushSampleTo(t, e.registry, "scan/critical:1", "critical")
	// The first answer is report_not_available (the scan starts then);
	// wait for the report, through admission as a user would see it.
	var err error
	pollErr := cluster.Poll(context.Background(), 60*time.Second, func() error {
		_, err = e.create(healthyPod("prod", "critical", critical), true)
		if err != nil && strings.Contains(err.Error(), "report_not_available") {
			return err
		}
		return nil
	})
	if pollErr != nil {
		t.Fatal(pollErr)
	}
	denied(t, "a critical image in prod", err, "[moat-image-scan-prod]", "its scan was rejected", "critical")

	e.warnings.Reset()
	if _, err := e.create(healthyPod("dev", "critical", critical), false); err != nil {
		t.Fatalf("a critical image in dev: %v", err)
	}
	if w := e.warnings.All(); !strings.Contains(w, "[moat-image-scan-dev]") || !strings.Contains(w, "its scan was rejected") {
		t.Errorf("a critical image in dev: admitted without the warning; warnings: %q", w)
	}
}

func (e *e2e) pendingScan(t *testing.T) {
	// scan/slow's layers are held by the registry: its scan cannot finish.
	slow, _ := testenv.PushSampleTo(t, e.registry, "scan/slow:1", "clean")
	_, err := e.create(healthyPod("prod", "slow", slow), false)
	denied(t, "an image still being scanned, in prod", err, "[moat-image-scan-prod]", "report_not_available")
	if _, err := e.create(healthyPod("dev", "slow", slow), false); err != nil {
		t.Fatalf("an image still being scanned, in dev: %v", err)
	}

	e.releaseSlowScan()
	// The scan finishes, then Gatekeeper's cached answer expires.
	err = cluster.Poll(context.Background(), 60*time.Second, func() error {
		_, err := e.create(healthyPod("prod", "slow", slow), true)
		return err
	})
	if err != nil {
		t.Fatalf("prod, once the scan is done: %v", err)
	}
	if _, err := e.create(healthyPod("prod", "slow", slow), false); err != nil {
		t.Fatalf("prod, once the scan is done: %v", err)
	}
}

func (e *e2e) digestPinning(t *testing.T) {
	tag := e.registry + "/app/web:v1"
	first := testenv.PushRandom(t, e.registry, "app/web:v1")
	pod, err := e.create(healthyPod("dev", "pinned", tag), false)
	if err != nil {
		t.Fatal(err)
	}
	want := tag + "@" + first.DigestStr()
	if got := pod.Spec.Containers[0].Image; got != want {
		t.Fatalf("stored image %s, want %s", got, want)
	}

	second := testenv.PushRandom(t, e.registry, "app/web:v1")
	stored, err := e.client.CoreV1().Pods("dev").Get(context.Background(), "pinned", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stored.Spec.Containers[0].Image; got != want {
		t.Errorf("after the tag moved, the stored pod runs %s, want %s", got, want)
	}
	// A pod admitted now gets the new digest, once the provider's and
	// Gatekeeper's caches have expired.
	err = cluster.Poll(context.Background(), 30*time.Second, func() error {
		p, err := e.create(healthyPod("dev", "later", tag), true)
		if err != nil {
			return err
		}
		if got := p.Spec.Containers[0].Image; got != tag+"@"+second.DigestStr() {
			return fmt.Errorf("a new pod gets %s", got)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func (e *e2e) ephemeralContainer(t *testing.T) {
	ctx := context.Background()
	image := e.registry + "/app/web:v1"
	pod, err := e.create(healthyPod("dev", "debug-target", image), false)
	if err != nil {
		t.Fatal(err)
	}
	// What `kubectl debug` sends: an UPDATE of the pods/ephemeralcontainers
	// subresource. A debug container as hardened as the pod's own (it
	// cannot set resources: Kubernetes refuses them) is admitted.
	healthy := healthyPod("", "", image).Spec.Containers[0]
	debugger := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: "debugger", Image: image, SecurityContext: healthy.SecurityContext.DeepCopy(),
	}}
	pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, debugger)
	pod, err = e.client.CoreV1().Pods("dev").UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("a hardened ephemeral container: %v", err)
	}

	// The same, privileged (as `kubectl debug --profile=sysadmin`), is not.
	root := debugger.DeepCopy()
	root.Name = "root-debugger"
	root.SecurityContext.Privileged, root.SecurityContext.AllowPrivilegeEscalation = ptr.To(true), nil
	pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, *root)
	_, err = e.client.CoreV1().Pods("dev").UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{})
	denied(t, "a privileged ephemeral container", err, "root-debugger")
	// A privileged container also escalates privileges: either rule may be
	// the one named (a ValidatingAdmissionPolicy stops at its first).
	if err != nil && !regexp.MustCompile(`defender-privilege(d|-escalation)`).MatchString(err.Error()) {
		t.Errorf("a privileged ephemeral container: denied by another rule: %v", err)
	}
}

func (e *e2e) auditDryrun(t *testing.T) {
	ctx := context.Background()
	// Pod Security restricted is on trial (dryrun): a pod without a
	// seccomp profile is admitted, and audit reports it.
	p := healthyPod("dev", "audit-me", e.registry+"/app/web:v1")
	p.Spec.SecurityContext.SeccompProfile = nil
	if _, err := e.create(p, false); err != nil {
		t.Fatalf("a pod breaking only dryrun constraints: %v", err)
	}
	var dryrun []*unstructured.Unstructured
	for _, c := range e.constraints {
		if a, _, _ := unstructured.NestedString(c.Object, "spec", "enforcementAction"); a == "dryrun" {
			dryrun = append(dryrun, c)
		}
	}
	var reportedBy []string
	err := cluster.Poll(ctx, 60*time.Second, func() error {
		reportedBy = nil
		for _, c := range dryrun {
			got, err := e.apply.Get(ctx, c)
			if err != nil {
				return err
			}
			vs, _, _ := unstructured.NestedSlice(got.Object, "status", "violations")
			for _, v := range vs {
				m := v.(map[string]any)
				if m["name"] == "audit-me" && m["namespace"] == "dev" && m["enforcementAction"] == "dryrun" {
					reportedBy = append(reportedBy, c.GetName()+": "+fmt.Sprint(m["message"]))
				}
			}
		}
		if len(reportedBy) == 0 {
			return fmt.Errorf("no dryrun constraint reports dev/audit-me yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(reportedBy, "\n"), "seccomp") {
		t.Errorf("audit reports dev/audit-me, but not its missing seccomp profile: %v", reportedBy)
	}
}

// updatesAfterEnforcing: a pod admitted while a constraint was on trial
// (dryrun) must still take labels and lose its finalizer once the
// constraint denies, and must not take a privileged debug container.
func (e *e2e) updatesAfterEnforcing(t *testing.T) {
	ctx := context.Background()
	var seccomp *unstructured.Unstructured
	for _, c := range e.constraints {
		if a, _, _ := unstructured.NestedString(c.Object, "spec", "enforcementAction"); c.GetKind() == "MoatSeccomp" && a == "dryrun" {
			seccomp = c.DeepCopy()
		}
	}
	if seccomp == nil {
		t.Fatal("the chart's values put no MoatSeccomp constraint on trial (dryrun)")
	}
	// Admitted under dryrun: no seccomp profile, and a finalizer.
	legacy := healthyPod("dev", "legacy", e.registry+"/app/web:v1")
	legacy.Spec.SecurityContext.SeccompProfile = nil
	legacy.Finalizers = []string{"moat.dev/e2e"}
	pod, err := e.create(legacy, false)
	if err != nil {
		t.Fatalf("a pod breaking only a dryrun constraint: %v", err)
	}

	// A Deployment of such pods, admitted under dryrun too.
	replicas := int32(1)
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "dev"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "legacy"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "legacy"}},
				Spec:       *legacy.Spec.DeepCopy(),
			},
		},
	}
	if _, err = e.client.AppsV1().Deployments("dev").Create(ctx, deployment, metav1.CreateOptions{}); err != nil {
		t.Fatalf("a Deployment breaking only a dryrun constraint: %v", err)
	}
	t.Cleanup(func() { _ = e.client.AppsV1().Deployments("dev").Delete(ctx, "legacy", metav1.DeleteOptions{}) })

	setAction := func(action string) {
		t.Helper()
		c := seccomp.DeepCopy()
		must(t, unstructured.SetNestedField(c.Object, action, "spec", "enforcementAction"))
		if _, err := e.apply.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	setAction("deny")
	t.Cleanup(func() { setAction("dryrun") })
	// Enforced once a new pod like it is denied (by the webhook or the
	// ValidatingAdmissionPolicy, whichever is first).
	twin := legacy.DeepCopy()
	twin.Name, twin.Finalizers = "legacy-twin", nil
	err = cluster.Poll(ctx, 60*time.Second, func() error {
		if _, err := e.create(twin.DeepCopy(), true); err == nil {
			return fmt.Errorf("a pod without a seccomp profile is still admitted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.create(twin.DeepCopy(), true)
	denied(t, "a new pod without a seccomp profile", err, seccomp.GetName())

	// kubectl label: nothing a control looks at changed.
	pod.Labels = map[string]string{"team": "payments"}
	if pod, err = e.client.CoreV1().Pods("dev").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("labelling a pod admitted under dryrun: %v", err)
	}

	// The Deployment scaled through its spec: its pod template is unchanged.
	// Its pod template changed: judged as a new one, and denied.
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		d, err := e.client.AppsV1().Deployments("dev").Get(ctx, "legacy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Replicas = ptr.To(int32(2))
		_, err = e.client.AppsV1().Deployments("dev").Update(ctx, d, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) { // the controller manager writes its status
			return err
		}
		if err != nil {
			t.Fatalf("scaling a Deployment admitted under dryrun: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var restart error
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		d, err := e.client.AppsV1().Deployments("dev").Get(ctx, "legacy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": time.Now().UTC().Format(time.RFC3339)}
		_, restart = e.client.AppsV1().Deployments("dev").Update(ctx, d, metav1.UpdateOptions{})
		if apierrors.IsConflict(restart) { // the controller manager writes its status
			return restart
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	denied(t, "a restart (changed pod template) of a Deployment without seccomp", restart, seccomp.GetName())

	// kubectl debug, privileged: judged, and denied.
	healthy := healthyPod("", "", e.registry+"/app/web:v1").Spec.Containers[0]
	root := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: "root-debugger", Image: e.registry + "/app/web:v1", SecurityContext: healthy.SecurityContext.DeepCopy(),
	}}
	root.SecurityContext.Privileged, root.SecurityContext.AllowPrivilegeEscalation = ptr.To(true), nil
	withRoot := pod.DeepCopy()
	withRoot.Spec.EphemeralContainers = append(withRoot.Spec.EphemeralContainers, root)
	_, err = e.client.CoreV1().Pods("dev").UpdateEphemeralContainers(ctx, pod.Name, withRoot, metav1.UpdateOptions{})
	denied(t, "a privileged ephemeral container on a pod admitted under dryrun", err)

	// Deleted: it waits for its finalizer, whose removal must be admitted.
	must(t, e.client.CoreV1().Pods("dev").Delete(ctx, pod.Name, metav1.DeleteOptions{}))
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		p, err := e.client.CoreV1().Pods("dev").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.DeletionTimestamp == nil {
			return fmt.Errorf("dev/%s has no deletionTimestamp yet", pod.Name)
		}
		pod = p
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pod.Finalizers = nil
	if _, err := e.client.CoreV1().Pods("dev").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("removing the finalizer of a terminating pod admitted under dryrun: %v", err)
	}
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		_, err := e.client.CoreV1().Pods("dev").Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("dev/%s is still there (%v)", pod.Name, err)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// replicasShareState points Gatekeeper's Providers at a second replica,
// then at that replica restarted: an image the first replica accepted is
// admitted in prod by each at its first answer, and neither scans it again.
func (e *e2e) replicasShareState(t *testing.T, dir string) {
	ctx := context.Background()
	clean, _ := testenv.PushSampleTo(t, e.registry, "shared/clean:0", "clean")
	err := cluster.Poll(ctx, 60*time.Second, func() error {
		_, err := e.create(healthyPod("prod", "shared-clean", clean), true)
		return err
	})
	if err != nil {
		t.Fatalf("the first replica never accepted the image in prod: %v", err)
	}
	point := func(url string) { e.pointProviders(t, url) }
	defer point(e.moatURL)
	replica, url, ops := e.startReplica(t, dir, "moat-serve-replica")
	defer func() {
		if t.Failed() {
			e.logSharedState(t, ops)
		}
	}()
	for round := range 2 {
		if round == 1 { // the replica restarts, with nothing in memory
			replica.Stop()
			replica, url, ops = e.startReplica(t, dir, "moat-serve-replica-restarted")
		}
		point(url)
		// New tags of the same image, until one reaches the replica: the
		// first answer it gives must admit the pod.
		for i := 0; ; i++ {
			tag, _ := testenv.PushSampleTo(t, e.registry, fmt.Sprintf("shared/clean:r%d-%d", round, i), "clean")
			_, err := e.create(healthyPod("prod", "shared-clean", tag), true)
			if keysAnswered(t, ops) > 0 {
				if err != nil {
					t.Fatalf("round %d: the replica's first answer denied an accepted image in prod: %v", round, err)
				}
				break
			}
			if i == 100 {
				t.Fatalf("round %d: Gatekeeper never reached the replica", round)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if n := strings.Count(replica.Tail(1<<20), `"msg":"scan done"`); n != 0 {
			t.Errorf("round %d: the replica scanned %d times; the report was in the shared tier", round, n)
		}
	}
	replica.Stop()
}

// logSharedState logs, for a failure, what the shared tier holds and how
// each replica's calls to it went.
func (e *e2e) logSharedState(t *testing.T, replicaOps string) {
	ctx := context.Background()
	c := e.redis.Client()
	defer c.Close()
	keys, err := c.Keys(ctx, "*").Result()
	t.Logf("keys in Redis (%v):", err)
	for _, k := range keys {
		ttl, _ := c.PTTL(ctx, k).Result()
		t.Logf("  %s (%s left)", k, ttl)
	}
	for name, ops := range map[string]string{"first replica": e.moatOps, "second replica": replicaOps} {
		resp, err := http.Get(ops + "/metrics")
		if err != nil {
			t.Logf("%s: %v", name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "moat_shared_") || strings.HasPrefix(l, "moat_resolutions_total") {
				t.Logf("%s: %s", name, l)
			}
		}
	}
}

// waitEnforced waits until Gatekeeper enforces the constraint c.
func (e *e2e) waitEnforced(t *testing.T, c *unstructured.Unstructured) {
	t.Helper()
	e.waitStatus(t, c, func(st map[string]any) bool {
		pods, _ := st["byPod"].([]any)
		return len(pods) > 0 && pods[0].(map[string]any)["enforced"] == true
	})
}

// pointProviders points Gatekeeper's Providers at the replica at url.
func (e *e2e) pointProviders(t *testing.T, url string) {
	t.Helper()
	for _, p := range e.providers {
		must(t, unstructured.SetNestedField(p.Object, url+cluster.ProviderPath(p), "spec", "url"))
		if _, err := e.apply.Apply(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
}

// keysAnswered is how many keys a replica answered at /validate.
func keysAnswered(t *testing.T, ops string) float64 {
	resp, err := http.Get(ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^moat_keys_total\{endpoint="validate"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(string(m[1]), 64)
	return f
}

// podSecurityVersion pins a Pod Security Standards constraint to a
// version through the API server: the constraint's schema refuses a
// malformed version, and Gatekeeper applies the rules of the version named.
func (e *e2e) podSecurityVersion(t *testing.T) {
	ctx := context.Background()
	constraint := func(version string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "MoatHostProbes",
			"metadata": map[string]any{"name": "e2e-pss-host-probes"},
			"spec": map[string]any{
				"enforcementAction": "deny",
				"match": map[string]any{
					"kinds":      []any{map[string]any{"apiGroups": []any{""}, "kinds": []any{"Pod"}}},
					"namespaces": []any{"dev"},
				},
				"parameters": map[string]any{"version": version},
			},
		}}
	}
	if _, err := e.apply.Apply(ctx, constraint("1.34")); err == nil || !strings.Contains(err.Error(), "spec.parameters.version") {
		t.Fatalf("a constraint with version 1.34: %v, want refused by its schema", err)
	}
	c := constraint("v1.33")
	if _, err := e.apply.Apply(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r, err := e.apply.Resource(c); err == nil {
			_ = r.Delete(ctx, c.GetName(), metav1.DeleteOptions{})
		}
	})
	probing := func() *corev1.Pod {
		p := healthyPod("dev", "probe-host", e.registry+"/never/pushed:v1")
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			TCPSocket: &corev1.TCPSocketAction{Host: "169.254.169.254", Port: intstr.FromInt32(80)}}}
		return p
	}
	// The rule begins in 1.34: under v1.33 the constraint, once
	// enforced, admits the pod; moved to v1.34 it denies it.
	e.waitEnforced(t, c)
	if _, err := e.create(probing(), true); err != nil {
		t.Fatalf("version v1.33: %v, want admitted", err)
	}
	if _, err := e.apply.Apply(ctx, constraint("v1.34")); err != nil {
		t.Fatal(err)
	}
	err := cluster.Poll(ctx, 30*time.Second, func() error {
		if _, err := e.create(probing(), true); err == nil || !strings.Contains(err.Error(), "e2e-pss-host-probes") {
			return fmt.Errorf("version v1.34 does not deny yet: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.create(probing(), true)
	denied(t, "a probe with a host under v1.34", err, "must not set host: app")
}

func (e *e2e) providerDown(t *testing.T) {
	e.moat.Stop()
	// A tag Gatekeeper has never asked about, so nothing is cached.
	tag := e.registry + "/app/after:v1"
	testenv.PushRandom(t, e.registry, "app/after:v1")

	_, err := e.create(healthyPod("prod", "provider-down", tag), false)
	denied(t, "prod with the provider down (providerError: reject)", err, "[moat-image-scan-prod]", "the image provider failed")

	e.warnings.Reset()
	pod, err := e.create(healthyPod("dev", "provider-down", tag), false)
	if err != nil {
		t.Fatalf("dev with the provider down (providerError: accept): %v", err)
	}
	if got := pod.Spec.Containers[0].Image; got != tag {
		t.Errorf("dev with the provider down: stored image %s, want the tag as written (the mutator's failurePolicy is Ignore)", got)
	}

	// Gatekeeper also made ValidatingAdmissionPolicies of the CEL templates
	// (its default), so the API server may deny this pod itself; the name
	// of the constraint is in either denial.
	_, err = e.create(hostPID(healthyPod("dev", "host-pid", tag)), false)
	denied(t, "a pod sharing the host's PID namespace, with the provider down", err, "defender-host-namespaces")
	// Expansion is Gatekeeper's alone: its webhook still judges the CEL
	// templates.
	var bad appsv1.Deployment
	readYAML(t, filepath.Join(root, "gator-suites", "defender-samples", "unhealthy-deployment-shop.yaml"), &bad)
	bad.Name = "redis-unhealthy-provider-down"
	_, err = e.client.AppsV1().Deployments("shop").Create(context.Background(), &bad, metav1.CreateOptions{})
	denied(t, "the unhealthy Deployment with the provider down", err, "[defender-privileged] [Implied by ")
}
