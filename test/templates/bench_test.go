package templates_test

import (
	"context"
	"github.com/moat-dev/moat/test/pack"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// unhealthyPod is the pod Defender's unhealthy sample Deployment creates.
const unhealthyPod = `
apiVersion: v1
kind: Pod
metadata: {name: redis-unhealthy, namespace: shop, labels: {app: redis}}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers:
  - name: redis
    image: redis:latest
    ports: [{containerPort: 9001, hostPort: 9001}]
    securityContext: {privileged: true, readOnlyRootFilesystem: false, allowPrivilegeEscalation: true, runAsUser: 0, capabilities: {add: [NET_ADMIN]}}
    volumeMounts: [{mountPath: /test-pd, name: test-volume, readOnly: true}]
  volumes: [{name: test-volume, hostPath: {path: /tmp}}]
`

// healthyPod is the pod of Defender's healthy sample, with its registry
// admitted: it breaks only the automount rule.
const healthyPod = `
apiVersion: v1
kind: Pod
metadata:
  name: redis-healthy
  namespace: shop
  annotations: {container.apparmor.security.beta.kubernetes.io/redis: runtime/default}
spec:
  containers:
  - name: redis
    image: contoso.azurecr.io/redis:latest
    ports: [{containerPort: 80}]
    resources: {limits: {cpu: 100m, memory: 250Mi}}
    securityContext: {privileged: false, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, runAsNonRoot: true, runAsUser: 1000}
`

// BenchmarkDefenderSet reviews Defender's sample pods against every
// constraint of constraints/defender/, once as Gatekeeper runs the templates
// (CEL) and once with Rego only, on one goroutine: reviews per second per
// core. The unhealthy pod also pays for building 13 messages.
func BenchmarkDefenderSet(b *testing.B) {
	for _, sample := range []struct{ name, yaml string }{{"unhealthy", unhealthyPod}, {"healthy", healthyPod}} {
		var pod unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(sample.yaml), &pod.Object); err != nil {
			b.Fatal(err)
		}
		for _, engine := range []string{"CEL", "Rego"} {
			b.Run(sample.name+"/"+engine, func(b *testing.B) {
				var opts []gator.Opt
				if engine == "CEL" {
					opts = append(opts, gator.WithK8sCEL())
				}
				c, err := gator.NewOPAClient(false, opts...)
				if err != nil {
					b.Fatal(err)
				}
				n := loadDefender(b, c)
				want := 0
				for _, r := range verdicts(b, c, &pod) {
					if r != "" {
						want++
					}
				}
				if sample.name == "unhealthy" && want < 10 {
					b.Fatalf("the unhealthy pod violates %d of %d constraints; expected most", want, n)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					resp, err := c.Review(context.Background(), &pod)
					if err != nil || len(resp.Results()) != want {
						b.Fatalf("review: %v, %d results", err, len(resp.Results()))
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reviews/s")
				b.Logf("%s pod, %s: %d constraints, %d violations per review, %.0f reviews/s", sample.name, engine, n, want, float64(b.N)/b.Elapsed().Seconds())
			})
		}
	}
}

// loadDefender adds every template and the Defender set, made to deny so
// the rules are measured, not the audit-only effect.
func loadDefender(b *testing.B, c gator.Client) int {
	pack.AddTemplates(b, c)
	files, _ := filepath.Glob(filepath.Join(pack.Root, "constraints", "defender", "*.yaml"))
	for _, f := range files {
		u := pack.ReadConstraint(b, f)
		_ = unstructured.SetNestedField(u.Object, "deny", "spec", "enforcementAction")
		pack.AddConstraint(b, c, u)
	}
	return len(files)
}
