package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/moat-dev/moat/provider/testenv"
)

// Gatekeeper is the Gatekeeper manager running out of cluster, with its
// webhooks registered with the API server by URL.
type Gatekeeper struct {
	Proc *Proc
	// CertDir holds ca.crt, tls.crt and tls.key: the webhook's serving
	// certificate, which is also the client certificate Gatekeeper presents
	// to external-data providers (so it has both usages).
	CertDir string
	URL     string // https://127.0.0.1:port
	Metrics string // http://127.0.0.1:port/metrics: its Prometheus metrics
}

// GatekeeperOptions are the settings a test changes.
type GatekeeperOptions struct {
	// ProviderCacheTTL is --external-data-provider-response-cache-ttl.
	ProviderCacheTTL time.Duration
	// AuditInterval is --audit-interval; 0 turns audit off.
	AuditInterval time.Duration
	// NoVAP stops Gatekeeper from turning CEL templates into
	// ValidatingAdmissionPolicies (and constraints into their bindings):
	// its webhook then evaluates every constraint itself.
	NoVAP bool
}

const gatekeeperNamespace = "gatekeeper-system"

// StartGatekeeper installs what Gatekeeper's own manifest installs that
// matters out of cluster (its namespace, CRDs and webhook configurations,
// from deploy/gatekeeper.yaml of the pinned module) and starts the manager
// with every operation in one process: webhook, mutation, audit, status
// and constraint CRD generation. The manifest splits them into two
// Deployments; out of cluster both would share one fake pod name, and so
// one set of status objects.
func (c *Cluster) StartGatekeeper(ctx context.Context, opts GatekeeperOptions) (*Gatekeeper, error) {
	manifest, err := os.ReadFile(filepath.Join(c.bins.GatekeeperDir, "deploy", "gatekeeper.yaml"))
	if err != nil {
		return nil, err
	}
	objs, err := Decode(manifest)
	if err != nil {
		return nil, fmt.Errorf("deploy/gatekeeper.yaml: %w", err)
	}
	a, err := c.Applier()
	if err != nil {
		return nil, err
	}
	var webhooks []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace", "CustomResourceDefinition":
			if _, err := a.Apply(ctx, o); err != nil {
				return nil, err
			}
		case "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
			webhooks = append(webhooks, o)
		}
	}
	if len(webhooks) != 2 {
		return nil, fmt.Errorf("deploy/gatekeeper.yaml: %d webhook configurations, want 2", len(webhooks))
	}
	if err := c.waitCRDsEstablished(ctx, a, objs); err != nil {
		return nil, err
	}

	g := &Gatekeeper{CertDir: filepath.Join(c.Dir, "gatekeeper-certs")}
	if err := os.MkdirAll(g.CertDir, 0o700); err != nil {
		return nil, err
	}
	gkCA, err := newCA("moat-e2e-gatekeeper-ca")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(g.CertDir, "ca.crt"), gkCA.CertPEM(), 0o600); err != nil {
		return nil, err
	}
	if _, _, err := issue(gkCA, g.CertDir, "tls", testenv.Leaf{CommonName: "gatekeeper-webhook-service.gatekeeper-system.svc",
		Hosts: []string{"127.0.0.1"}, Server: true, Client: true}); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	port, health, prom := ports[0], ports[1], ports[2]
	auditDir := filepath.Join(c.Dir, "gatekeeper-audit")
	if err := os.MkdirAll(auditDir, 0o700); err != nil {
		return nil, err
	}
	g.URL = "https://" + loopback(port)
	g.Metrics = "http://" + loopback(prom) + "/metrics"
	args := []string{
		"--operation=webhook", "--operation=mutation-webhook", "--operation=audit", "--operation=status",
		"--operation=mutation-status", "--operation=generate",
		// As in deploy/gatekeeper.yaml:
		"--logtostderr", "--exempt-namespace=" + gatekeeperNamespace, "--disable-opa-builtin={http.send}",
		// Out of cluster:
		"--debug-use-fake-pod", "--disable-cert-rotation", "--cert-dir=" + g.CertDir,
		"--host=127.0.0.1", "--port=" + strconv.Itoa(port), "--health-addr=" + loopback(health),
		"--metrics-addr=0", "--prometheus-port=" + strconv.Itoa(prom), "--shutdown-delay=0",
		// Short, so the tests see answers and audits change:
		"--external-data-provider-response-cache-ttl=" + opts.ProviderCacheTTL.String(),
		"--audit-interval=" + strconv.Itoa(int(opts.AuditInterval.Seconds())),
		"--log-denies",
		// Audit keeps its listings here (an emptyDir at /tmp/audit in the pod).
		"--api-cache-dir=" + auditDir,
		// Gatekeeper also turns CEL templates into ValidatingAdmissionPolicies
		// (its default); it waits 30s before binding them. Only that delay
		// differs from the default.
		"--default-wait-for-vapb-generation=1",
	}
	if opts.NoVAP {
		args = append(args, "--default-create-vap-for-templates=false", "--default-create-vap-binding-for-constraints=false")
	}
	env := []string{"POD_NAMESPACE=" + gatekeeperNamespace, "KUBECONFIG=" + c.Kubeconfig}
	if g.Proc, err = start(c.Dir, "gatekeeper", env, c.bins.Gatekeeper, args...); err != nil {
		return nil, err
	}
	c.Procs = append(c.Procs, g.Proc)
	if err := g.Proc.WaitFor("ready", 60*time.Second, func() error { return HTTPOK("http://" + loopback(health) + "/readyz") }); err != nil {
		return nil, err
	}

	// Register the webhooks by URL once Gatekeeper answers: the namespace
	// label check fails closed.
	caBundle := base64.StdEncoding.EncodeToString(gkCA.CertPEM())
	for _, w := range webhooks {
		hooks, _, _ := unstructured.NestedSlice(w.Object, "webhooks")
		for _, h := range hooks {
			hook := h.(map[string]any)
			cc := hook["clientConfig"].(map[string]any)
			path, _, _ := unstructured.NestedString(cc, "service", "path")
			hook["clientConfig"] = map[string]any{"url": g.URL + path, "caBundle": caBundle}
		}
		if err := unstructured.SetNestedSlice(w.Object, hooks, "webhooks"); err != nil {
			return nil, err
		}
		if _, err := a.Apply(ctx, w); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (c *Cluster) waitCRDsEstablished(ctx context.Context, a *Applier, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		err := Poll(ctx, 30*time.Second, func() error {
			got, err := a.Get(ctx, o)
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, cnd := range conds {
				m := cnd.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return fmt.Errorf("CRD %s not established", o.GetName())
		})
		if err != nil {
			return err
		}
	}
	return nil
}
