// Package node installs Moat as a user does, on a real one-node cluster:
// Gatekeeper from its own Helm chart, then `helm install moat charts/moat`
// with --wait, and checks what only a kubelet shows: the pods start and
// become Ready under Pod Security restricted with read-only root file
// systems, Gatekeeper reaches the provider through the Service's DNS name,
// admission holds through a rolling upgrade and the loss of a replica,
// `helm test` passes and `helm uninstall` leaves nothing behind. The node
// (containerd, runc, CNI, kubelet, kube-proxy, CoreDNS) runs in network and
// mount namespaces of its own (cluster.IsolateNode); images are built
// without Docker. `make e2e-node` runs it; see README.md here.
package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/e2e/cluster"
)

func TestMain(m *testing.M) { os.Exit(cluster.IsolateNode(m, build)) }

// build builds every binary the test needs into the cache, outside the
// namespaces: inside there is no network to download modules.
func build() error {
	if _, err := cluster.Build(root, os.Stderr); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "moat-node-build")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	_, err = cluster.BuildNode(root, dir, os.Stderr)
	return err
}

var root, _ = filepath.Abs("../..")

const (
	namespace = "gatekeeper-system" // as the README installs both
	release   = "moat"
	moatTag   = "node-test"
)

type nodeTest struct {
	node     *cluster.Node
	client   kubernetes.Interface
	dyn      dynamic.Interface
	warnings *cluster.Warnings
	values   string // the values file of the install
}

func TestHelmInstallOnANode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	start := time.Now()
	bins, err := cluster.Build(root, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := cluster.BuildNode(root, dir, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binaries ready in %s", time.Since(start).Round(time.Second))

	start = time.Now()
	c, err := cluster.StartWith(ctx, bins, dir, cluster.Options{NodeIP: cluster.NodeIP, ServiceIP: cluster.APIServiceIP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	node, err := cluster.StartNode(ctx, c, nb, dir)
	t.Cleanup(func() {
		if node != nil {
			node.Stop()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane, node Ready and CoreDNS Ready in %s", time.Since(start).Round(time.Second))

	nt := &nodeTest{node: node, warnings: &cluster.Warnings{}}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = nt.warnings
	nt.client = kubernetes.NewForConfigOrDie(cfg)
	nt.dyn = dynamic.NewForConfigOrDie(cfg)

	start = time.Now()
	nt.installGatekeeper(t, bins)
	t.Logf("Gatekeeper installed from its chart in %s", time.Since(start).Round(time.Second))
	start = time.Now()
	nt.installMoat(t, dir)
	t.Logf("Moat installed (helm install --wait) in %s", time.Since(start).Round(time.Second))

	for _, step := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"PodsReadyUnderRestricted", nt.podsReadyUnderRestricted},
		{"ProviderThroughServiceDNS", nt.providerThroughServiceDNS},
		{"DefenderSamples", nt.defenderSamples},
		{"CriticalImageByNamespace", nt.criticalImageByNamespace},
		{"PinnedPodStarts", nt.pinnedPodStarts},
		{"UpgradeRollsWithoutAdmissionFailures", nt.upgradeRollsWithoutFailures},
		{"OneProviderPodDeleted", nt.oneProviderPodDeleted},
		{"HelmTest", nt.helmTest},
		{"UninstallLeavesNothing", nt.uninstallLeavesNothing},
	} {
		if !t.Run(step.name, step.run) {
			nt.dumpLogs(t)
			t.Fatalf("%s failed: the later steps build on it", step.name)
		}
	}
}

func (nt *nodeTest) installGatekeeper(t *testing.T, bins *cluster.Binaries) {
	ctx := context.Background()
	ref, err := nt.node.Push("gatekeeper:"+bins.GatekeeperVersion, cluster.GatekeeperImage(bins.Gatekeeper))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Gatekeeper's image: %s", ref)
	// What Gatekeeper's post-install job would label its namespace with
	// (its image, gatekeeper-crds, is kubectl: not built here): Pod
	// Security restricted enforced, and Gatekeeper's own webhook skipping
	// it.
	_, err = nt.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{
		"admission.gatekeeper.sh/ignore":             "no-self-managing",
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(bins.GatekeeperDir, "charts", "gatekeeper")
	out, err := nt.node.Helm(ctx, "install", "gatekeeper", chart, "-n", namespace, "--wait", "--timeout", "5m",
		"--set", "image.repository="+nt.node.Registry+"/gatekeeper", "--set", "image.release="+bins.GatekeeperVersion,
		"--set", "replicas=1",
		// As the chart README recommends: a pending scan's answer is not
		// replayed for Gatekeeper's default three minutes.
		"--set", "externaldataProviderResponseCacheTTL=30s",
		// Jobs whose images (kubectl, curl) are not built here.
		"--set", "postInstall.labelNamespace.enabled=false", "--set", "postInstall.probeWebhook.enabled=false",
		"--set", "upgradeCRDs.enabled=false")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("helm install gatekeeper:\n%s", firstLines(out, 8))
}

// moatValues are the settings the node runs Moat with: two provider replicas
// sharing a bundled Redis, the scanner as a service (with the sample
// database from a ConfigMap: nothing to download here), the Defender set
// enforced, PSS restricted on trial, per-namespace image policies, digests
// pinned. The images come from the node's registry.
const moatValues = `
image: {repository: %[1]s/moat, tag: %[2]s}
provider:
  insecureRegistries: [%[1]q]
  # A long cache would hide the provider from Gatekeeper's repeated questions.
  digestTTL: 30s
scanner:
  mode: service
  database:
    url: ""
    path: /var/lib/moat/offline/vulnerability.db
    volume: {configMap: {name: moat-node-vulndb}}
  resources:
    requests: {cpu: 100m, memory: 256Mi}
    limits: {cpu: "1", memory: 2Gi}
sharedState:
  bundled:
    image: {repository: %[1]s/valkey, tag: %[2]s, digest: %[3]s}
mutation: {pinDigests: true}
policies:
  defender:
    enabled: true
    enforcementAction: deny
    allowedImagesRegex: '^10\.250\.0\.10:5000/.+$'
  podSecurity: {level: restricted, enforcementAction: dryrun}
imagePolicy:
  enabled: true
  defaultPolicy: accept
  byNamespace:
    prod: {defaultPolicy: scan-result}
    dev: {defaultPolicy: scan-result, enforcementAction: warn, reportPending: accept, scanFailed: accept, providerError: accept}
`

func (nt *nodeTest) installMoat(t *testing.T, dir string) {
	ctx := context.Background()
	moatRef, err := nt.node.Push("moat:"+moatTag, cluster.MoatImage(nt.node.Bins.Moat))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Moat's image: %s", moatRef)
	// The bundled shared tier: Debian's redis-server, under the name the
	// chart runs (valkey-server), as the chart's user 999.
	redis, err := cluster.LinkedImage("/usr/bin/redis-server", []string{"/usr/bin/valkey-server"}, "999:999")
	if err != nil {
		t.Fatal(err)
	}
	redisRef, err := nt.node.Push("valkey:"+moatTag, redis)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "vulnerability.db")
	if err := testenv.WriteSampleDB(db, false); err != nil {
		t.Fatal(err)
	}
	dbBytes, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"prod", "dev", "shop"} {
		if _, err := nt.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = nt.client.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "moat-node-vulndb"},
		BinaryData: map[string][]byte{"vulnerability.db": dbBytes},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the database ConfigMap (%d bytes): %v", len(dbBytes), err)
	}
	digest := redisRef[strings.LastIndex(redisRef, "@")+1:]
	nt.values = filepath.Join(dir, "moat-values.yaml")
	if err := os.WriteFile(nt.values, []byte(fmt.Sprintf(moatValues, nt.node.Registry, moatTag, digest)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := nt.node.Helm(ctx, "install", release, filepath.Join(root, "charts", "moat"), "-n", namespace,
		"-f", nt.values, "--wait", "--timeout", "5m")
	if err != nil {
		nt.dumpPods(t, namespace)
		t.Fatalf("%v", err)
	}
	t.Logf("helm install moat:\n%s", firstLines(out, 8))
}

// podsReadyUnderRestricted: every Moat pod runs, Ready, in a namespace
// that enforces Pod Security restricted, each container with a read-only
// root file system.
func (nt *nodeTest) podsReadyUnderRestricted(t *testing.T) {
	ctx := context.Background()
	ns, err := nt.client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("namespace %s does not enforce restricted: %v", namespace, ns.Labels)
	}
	pods, err := nt.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, p := range pods.Items {
		kinds[p.Labels["app.kubernetes.io/name"]]++
		if !ready(&p) {
			t.Errorf("pod %s is not Ready: %s", p.Name, podState(&p))
		}
		for _, c := range p.Spec.Containers {
			if c.SecurityContext == nil || !ptr.Deref(c.SecurityContext.ReadOnlyRootFilesystem, false) {
				t.Errorf("pod %s, container %s: the root file system is writable", p.Name, c.Name)
			}
		}
	}
	// Two provider replicas, the scanner, the shared tier.
	if kinds["moat"] != 2 || kinds["moat-scanner"] != 1 || kinds["moat-redis"] != 1 {
		t.Errorf("Moat's pods by name: %v; want moat 2, moat-scanner 1, moat-redis 1", kinds)
	}
	t.Logf("Moat's pods Ready under restricted: %v", kinds)
}

// providerThroughServiceDNS: the chart's Providers name the Service by its
// DNS name, with the chart's CA; Gatekeeper's answers prove the call (the
// later steps), its absence of errors is checked here.
func (nt *nodeTest) providerThroughServiceDNS(t *testing.T) {
	ctx := context.Background()
	providers, err := nt.dyn.Resource(schema.GroupVersionResource{Group: "externaldata.gatekeeper.sh", Version: "v1beta1", Resource: "providers"}).
		List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(providers.Items) == 0 {
		t.Fatal("no Provider objects")
	}
	want := "https://" + release + "." + namespace + ".svc:8443/"
	for _, p := range providers.Items {
		url, _, _ := unstructuredString(p.Object, "spec", "url")
		if !strings.HasPrefix(url, want) {
			t.Errorf("Provider %s calls %s, want the Service's DNS name %s…", p.GetName(), url, want)
		}
		ca, _, _ := unstructuredString(p.Object, "spec", "caBundle")
		if _, err := base64.StdEncoding.DecodeString(ca); err != nil || ca == "" {
			t.Errorf("Provider %s: caBundle %q", p.GetName(), ca)
		}
	}
	// A tag is pinned only if Gatekeeper's mutation webhook reached the
	// provider: the proof that the name resolves and both certificates
	// are accepted.
	web := nt.pushWeb(t, "app/web:v1")
	err = cluster.Poll(ctx, 60*time.Second, func() error {
		p, err := nt.create(pod("dev", "dns-check", web), true)
		if err != nil {
			return err
		}
		if img := p.Spec.Containers[0].Image; !strings.Contains(img, "@sha256:") {
			return fmt.Errorf("the image is not pinned: %s", img)
		}
		return nil
	})
	if err != nil {
		nt.dumpLogs(t)
		t.Fatal(err)
	}
}

// pushWeb pushes the pause program as a runnable image, clean for the
// scanner, under repoTag and returns its tag reference.
func (nt *nodeTest) pushWeb(t *testing.T, repoTag string) string {
	t.Helper()
	if _, err := nt.node.Push(repoTag, cluster.StaticImage("pause", nt.node.Bins.Pause)); err != nil {
		t.Fatal(err)
	}
	return nt.node.Registry + "/" + repoTag
}

func (nt *nodeTest) defenderSamples(t *testing.T) {
	ctx := context.Background()
	suite := filepath.Join(root, "gator-suites", "defender-samples")
	var bad appsv1.Deployment
	readYAML(t, filepath.Join(suite, "unhealthy-deployment-shop.yaml"), &bad)
	_, err := nt.client.AppsV1().Deployments("shop").Create(ctx, &bad, metav1.CreateOptions{})
	cluster.Denied(t, "the unhealthy sample Deployment", err, "[defender-", "[Implied by ")

	var good appsv1.Deployment
	readYAML(t, filepath.Join(suite, "healthy-deployment-shop.yaml"), &good)
	// Set as users must (see test/e2e); the image is the node's Redis.
	good.Spec.Template.Spec.AutomountServiceAccountToken = ptr.To(false)
	good.Spec.Template.Spec.Containers[0].Image = nt.node.Registry + "/valkey:" + moatTag
	good.Spec.Template.Spec.Containers[0].Command = []string{"redis-server", "--port", "6379", "--save", ""}
	if _, err := nt.client.AppsV1().Deployments("shop").Create(ctx, &good, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("the healthy sample Deployment: %v", err)
	}
	// This machine's kernel has no AppArmor, and a kubelet refuses a pod
	// that asks for a profile there ("Cannot enforce AppArmor"): the sample
	// as Defender wants it is admitted (above) but cannot start. To see its
	// pods run, the AppArmor rule goes to dryrun and the sample drops its
	// profile; every other Defender rule still judges it.
	apparmor := schema.GroupVersionResource{Group: "constraints.gatekeeper.sh", Version: "v1beta1", Resource: "moatapparmor"}
	_, err = nt.dyn.Resource(apparmor).Patch(ctx, "defender-apparmor", types.MergePatchType,
		[]byte(`{"spec":{"enforcementAction":"dryrun"}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(good.Spec.Template.Annotations, "container.apparmor.security.beta.kubernetes.io/redis")
	err = cluster.Poll(ctx, 30*time.Second, func() error {
		_, err := nt.client.AppsV1().Deployments("shop").Create(ctx, &good, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("the healthy sample Deployment without its AppArmor profile: %v", err)
	}
	err = cluster.Poll(ctx, 120*time.Second, func() error { return nt.node.DeploymentReady(ctx, "shop", good.Name) })
	if err != nil {
		nt.dumpPods(t, "shop")
		t.Fatal(err)
	}
}

func (nt *nodeTest) criticalImageByNamespace(t *testing.T) {
	critical, _ := testenv.PushSampleTo(t, nt.node.Registry, "scan/critical:1", "critical")
	var err error
	pollErr := cluster.Poll(context.Background(), 120*time.Second, func() error {
		_, err = nt.create(pod("prod", "critical", critical), true)
		if err != nil && strings.Contains(err.Error(), "report_not_available") {
			return err
		}
		return nil
	})
	if pollErr != nil {
		t.Fatal(pollErr)
	}
	cluster.Denied(t, "a critical image in prod", err, "[moat-image-scan-prod]", "its scan was rejected", "critical")

	nt.warnings.Reset()
	if _, err := nt.create(pod("dev", "critical", critical), true); err != nil {
		t.Fatalf("a critical image in dev: %v", err)
	}
	if w := nt.warnings.All(); !strings.Contains(w, "[moat-image-scan-dev]") || !strings.Contains(w, "its scan was rejected") {
		t.Errorf("a critical image in dev: admitted without the warning; warnings: %q", w)
	}
}

func (nt *nodeTest) pinnedPodStarts(t *testing.T) {
	ctx := context.Background()
	web := nt.node.Registry + "/app/web:v1"
	var stored *corev1.Pod
	// The first answer can be report_not_available: its scan starts then.
	// Without an AppArmor profile: this node has none (see DefenderSamples,
	// which set that rule to dryrun).
	p := pod("prod", "web", web)
	p.Spec.Containers[0].SecurityContext.AppArmorProfile = nil
	err := cluster.Poll(ctx, 120*time.Second, func() error {
		var err error
		stored, err = nt.create(p, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if img := stored.Spec.Containers[0].Image; !strings.HasPrefix(img, web+"@sha256:") {
		t.Fatalf("the stored pod runs %s, want %s@sha256:…", img, web)
	}
	err = cluster.Poll(ctx, 90*time.Second, func() error {
		p, err := nt.client.CoreV1().Pods("prod").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !ready(p) {
			return fmt.Errorf("pod prod/web: %s", podState(p))
		}
		return nil
	})
	if err != nil {
		nt.dumpPods(t, "prod")
		t.Fatal(err)
	}
	t.Logf("prod/web runs %s", stored.Spec.Containers[0].Image)
}

// whileAdmitting creates pods (server-side dry run) in prod, each with an
// image tag no earlier pod used, so neither Gatekeeper's cache nor the
// provider's answers it: every one is a call to the provider (mutation and
// scan status). It starts lead before during runs and stops trail after it
// returns, and fails t unless at least ten pods were admitted, each with
// its digest pinned, and none failed.
func (nt *nodeTest) whileAdmitting(t *testing.T, what, prefix string, tags int, lead, trail time.Duration, during func()) {
	t.Helper()
	// The tags point at the one clean image: one scan, many references.
	for i := 0; i < tags; i++ {
		nt.pushWeb(t, fmt.Sprintf("app/%s:%d", prefix, i))
	}
	stop := make(chan struct{})
	admitted := 0
	var failures []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			image := fmt.Sprintf("%s/app/%s:%d", nt.node.Registry, prefix, i%tags)
			start := time.Now()
			p, err := nt.create(pod("prod", fmt.Sprintf("%s-%d", prefix, i), image), true)
			switch {
			case err != nil:
				failures = append(failures, fmt.Sprintf("%s after %s: %v", image, time.Since(start).Round(time.Millisecond), err))
			case !strings.Contains(p.Spec.Containers[0].Image, "@sha256:"):
				failures = append(failures, fmt.Sprintf("%s: admitted without its digest pinned (the mutation webhook's call failed): %s", image, p.Spec.Containers[0].Image))
			default:
				admitted++
			}
		}
	}()
	time.Sleep(lead)
	during()
	time.Sleep(trail)
	close(stop)
	wg.Wait()
	t.Logf("%s: %d pods admitted meanwhile, %d failures", what, admitted, len(failures))
	if admitted < 10 {
		t.Errorf("only %d admissions while %s: too few to show anything", admitted, what)
	}
	for _, f := range failures {
		t.Errorf("admission failed while %s: %s", what, f)
	}
}

func (nt *nodeTest) upgradeRollsWithoutFailures(t *testing.T) {
	ctx := context.Background()
	before := nt.providerPods(t)
	// A provider setting rolls the pods; Pod Security down to baseline
	// makes the constraints hook delete the restricted-only constraints.
	restrictedOnly := schema.GroupVersionResource{Group: "constraints.gatekeeper.sh", Version: "v1beta1", Resource: "moatallowedusersgroups"}
	if _, err := nt.dyn.Resource(restrictedOnly).Get(ctx, "pss-restricted-run-as-non-root", metav1.GetOptions{}); err != nil {
		t.Fatalf("before the upgrade: %v", err)
	}
	var out string
	var err error
	nt.whileAdmitting(t, "the rollout ran", "rollout", 400, 2*time.Second, 3*time.Second, func() {
		start := time.Now()
		out, err = nt.node.Helm(ctx, "upgrade", release, filepath.Join(root, "charts", "moat"), "-n", namespace,
			"--reuse-values", "--set", "provider.logLevel=debug", "--set", "policies.podSecurity.level=baseline", "--wait", "--timeout", "5m")
		t.Logf("the rollout took %s", time.Since(start).Round(time.Millisecond))
	})
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("helm upgrade: %s", firstLines(out, 3))
	if _, err := nt.dyn.Resource(restrictedOnly).Get(ctx, "pss-restricted-run-as-non-root", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after the upgrade to baseline, the restricted constraint is still there (%v)", err)
	}
	baseline := schema.GroupVersionResource{Group: "constraints.gatekeeper.sh", Version: "v1beta1", Resource: "moatprivileged"}
	if _, err := nt.dyn.Resource(baseline).Get(ctx, "pss-baseline-privileged", metav1.GetOptions{}); err != nil {
		t.Errorf("after the upgrade to baseline, the baseline constraint: %v", err)
	}
	for name := range nt.providerPods(t) {
		if before[name] {
			t.Errorf("provider pod %s was not replaced by the rollout", name)
		}
	}
}

func (nt *nodeTest) oneProviderPodDeleted(t *testing.T) {
	ctx := context.Background()
	pods := nt.providerPods(t)
	if len(pods) != 2 {
		t.Fatalf("%d provider pods, want 2", len(pods))
	}
	var victim string
	for name := range pods {
		victim = name
		break
	}
	var err error
	nt.whileAdmitting(t, "provider pod "+victim+" was deleted", "deleted", 200, time.Second, 2*time.Second, func() {
		if err = nt.client.CoreV1().Pods(namespace).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
			return
		}
		// Until the pod is gone and its replacement is Ready.
		err = cluster.Poll(ctx, 120*time.Second, func() error {
			if _, err := nt.client.CoreV1().Pods(namespace).Get(ctx, victim, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("pod %s is still there (%v)", victim, err)
			}
			return nt.node.DeploymentReady(ctx, namespace, release)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (nt *nodeTest) helmTest(t *testing.T) {
	// No --logs: a passed test's pod is deleted (hook-succeeded), a failed
	// one stays for `kubectl logs`.
	out, err := nt.node.Helm(context.Background(), "test", release, "-n", namespace, "--timeout", "3m")
	if err != nil {
		nt.dumpPods(t, namespace)
		t.Fatalf("%v", err)
	}
	if !strings.Contains(out, "Phase:          Succeeded") {
		t.Fatalf("helm test ran no test that succeeded:\n%s", out)
	}
	t.Logf("helm test:\n%s", out)
}

// uninstallLeavesNothing: after helm uninstall no object of the release
// is left (of any kind the API server serves), Moat's templates and
// Providers are gone, and Gatekeeper still enforces a constraint of its own.
func (nt *nodeTest) uninstallLeavesNothing(t *testing.T) {
	ctx := context.Background()
	if _, err := nt.node.Helm(ctx, "uninstall", release, "-n", namespace, "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("%v", err)
	}
	// The one object kept on purpose (helm.sh/resource-policy: keep): the
	// shared tier's MAC key, so a reinstall still trusts what an external
	// Redis holds (docs/shared-state.md, the chart README's "Uninstall").
	kept := "secrets/" + namespace + "/" + release + "-shared-state"
	left := nt.releaseObjects(t)
	err := cluster.Poll(ctx, 60*time.Second, func() error {
		left = slices.DeleteFunc(nt.releaseObjects(t), func(o string) bool { return o == kept })
		if len(left) > 0 {
			return fmt.Errorf("%d objects left", len(left))
		}
		return nil
	})
	if err != nil {
		t.Errorf("after helm uninstall, objects of the release remain: %v", left)
	}
	secret, err := nt.client.CoreV1().Secrets(namespace).Get(ctx, release+"-shared-state", metav1.GetOptions{})
	if err != nil || secret.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the shared tier's key, kept on purpose: %v", err)
	}

	// Gatekeeper on its own: a template and constraint of the user's, and
	// pods admitted without Moat's Assign or Providers.
	a, err := nt.node.Cluster.Applier()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := cluster.Decode([]byte(ownPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, objs[0]); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 60*time.Second, func() error {
		_, err := a.Apply(ctx, objs[1])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 60*time.Second, func() error {
		_, err := nt.create(pod("dev", "unlabelled", nt.node.Registry+"/app/web:v1"), true)
		if err == nil || !strings.Contains(err.Error(), "[users-own-label]") {
			return fmt.Errorf("not denied by the user's own constraint yet: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	labelled := pod("dev", "labelled", nt.node.Registry+"/app/web:v1")
	labelled.Labels = map[string]string{"team": "web"}
	p, err := nt.create(labelled, true)
	if err != nil {
		t.Fatalf("after uninstall, a pod that meets the user's own constraint: %v", err)
	}
	if strings.Contains(p.Spec.Containers[0].Image, "@") {
		t.Errorf("after uninstall, the image is still pinned (Moat's Assign survived): %s", p.Spec.Containers[0].Image)
	}
}

// ownPolicy is a user's own template and constraint, not Moat's.
const ownPolicy = `apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: usersownlabel}
spec:
  crd: {spec: {names: {kind: UsersOwnLabel}}}
  targets:
  - target: admission.k8s.gatekeeper.sh
    rego: |
      package usersownlabel
      violation[{"msg": "a team label is required"}] { not input.review.object.metadata.labels.team }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: UsersOwnLabel
metadata: {name: users-own-label}
spec:
  match: {kinds: [{apiGroups: [""], kinds: [Pod]}], namespaces: [dev]}
`

// releaseObjects lists every object of any listable kind that carries the
// release's instance label or is one of Moat's templates.
func (nt *nodeTest) releaseObjects(t *testing.T) []string {
	t.Helper()
	lists, err := nt.client.Discovery().ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		t.Fatal(err)
	}
	var left []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if !strings.Contains(strings.Join(r.Verbs, ","), "list") || strings.Contains(r.Name, "/") || r.Name == "events" {
				continue
			}
			objs, err := nt.dyn.Resource(gv.WithResource(r.Name)).List(context.Background(), metav1.ListOptions{})
			if err != nil {
				continue
			}
			for _, o := range objs.Items {
				labels := o.GetLabels()
				mine := labels["app.kubernetes.io/instance"] == release && labels["app.kubernetes.io/managed-by"] == "Helm"
				if r.Name == "constrainttemplates" && strings.HasPrefix(o.GetName(), "moat") {
					mine = true
				}
				if mine {
					left = append(left, r.Name+"/"+o.GetNamespace()+"/"+o.GetName())
				}
			}
		}
	}
	return left
}

// Helpers.

func (nt *nodeTest) create(p *corev1.Pod, dryRun bool) (*corev1.Pod, error) {
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return nt.client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, opts)
}

// providerPods are the names of the provider's pods that are not being
// deleted.
func (nt *nodeTest) providerPods(t *testing.T) map[string]bool {
	t.Helper()
	pods, err := nt.client.CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/name=moat"})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names[p.Name] = true
		}
	}
	return names
}

// pod is a pod every Defender and restricted rule admits.
func pod(ns, name, image string) *corev1.Pod {
	return cluster.HealthyPod(ns, name, image, "50m", "32Mi")
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func podState(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		switch {
		case cs.State.Waiting != nil:
			s += fmt.Sprintf("; %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			s += fmt.Sprintf("; %s terminated: %s %s (exit %d)", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.Message, cs.State.Terminated.ExitCode)
		case !cs.Ready:
			s += fmt.Sprintf("; %s running, not ready (restarts %d)", cs.Name, cs.RestartCount)
		}
	}
	return s
}

// dumpPods logs the state of every pod in ns and the namespace's events,
// for a failure's diagnosis.
func (nt *nodeTest) dumpPods(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	pods, err := nt.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("listing pods: %v", err)
		return
	}
	failed := 0
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodFailed {
			if failed++; failed > 3 {
				continue // a controller re-creating refused pods: three say it
			}
		}
		t.Logf("pod %s/%s: %s %s", ns, p.Name, podState(&p), p.Status.Message)
	}
	if failed > 3 {
		t.Logf("and %d more failed pods", failed-3)
	}
	events, err := nt.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range events.Items {
			if e.Type != corev1.EventTypeNormal {
				t.Logf("event %s %s: %s", e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	nt.dumpLogs(t)
}

// dumpLogs logs the end of each Moat and Gatekeeper container's log.
func (nt *nodeTest) dumpLogs(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pods, err := nt.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			b, err := nt.client.CoreV1().Pods(namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: ptr.To[int64](40)}).DoRaw(ctx)
			if err != nil {
				b = []byte(err.Error())
			}
			t.Logf("log %s/%s:\n%s", p.Name, c.Name, b)
		}
	}
}

func unstructuredString(obj map[string]any, fields ...string) (string, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[f]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
