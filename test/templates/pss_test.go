package templates_test

import (
	"fmt"
	"github.com/moat-dev/moat/test/pack"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// pssClient is a CEL-first client (as Gatekeeper runs) with every template
// and the constraints of the given constraints/pss directories, each with
// its parameter version set to version.
func pssClient(t *testing.T, version string, dirs ...string) gator.Client {
	t.Helper()
	c := pack.NewClient(t, true)
	pack.AddTemplates(t, c)
	for _, d := range dirs {
		pack.AddConstraintDirs(t, c, func(u *unstructured.Unstructured) {
			if err := unstructured.SetNestedField(u.Object, version, "spec", "parameters", "version"); err != nil {
				t.Fatal(err)
			}
		}, filepath.Join("pss", d))
	}
	return c
}

func TestPodSecurityStandardsMatchPodSecurityAdmission(t *testing.T) {
	psa := newPSA(t)
	pods := psaPods(t, rand.New(rand.NewPCG(7, 11)), 3000)
	counts := comparePSA(t, psa, "latest", pods)
	for _, level := range []string{"baseline", "restricted"} {
		if counts[level][0] < 20 || counts[level][1] < 20 {
			t.Errorf("%s: %d allowed, %d denied; the generator must produce both", level, counts[level][0], counts[level][1])
		}
	}
	t.Logf("%d pods: same verdict as Pod Security Admission at every level; allowed/denied: baseline %v, restricted %v",
		len(pods), counts["baseline"], counts["restricted"])
}

// TestPodSecurityStandardsVersionsMatchPodSecurityAdmission compares the
// sets at each version where one of Pod Security Admission's checks begins
// or changes, at the version before it, and at one newer than any, so every
// span of versions with the same rules is judged.
func TestPodSecurityStandardsVersionsMatchPodSecurityAdmission(t *testing.T) {
	psa := newPSA(t)
	var versions []string
	seen := map[string]bool{}
	add := func(minor int) {
		if v := fmt.Sprintf("v1.%d", minor); !seen[v] {
			seen[v] = true
			versions = append(versions, v)
		}
	}
	for _, v := range psa.versions(t) {
		minor, err := strconv.Atoi(strings.TrimPrefix(v, "v1."))
		if err != nil {
			t.Fatalf("tools/psa version %q", v)
		}
		if minor > 0 {
			add(minor - 1)
		}
		add(minor)
	}
	add(99)
	pods := psaPods(t, rand.New(rand.NewPCG(20261202, 3)), 250)
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			counts := comparePSA(t, psa, v, pods)
			t.Logf("allowed/denied: baseline %v, restricted %v", counts["baseline"], counts["restricted"])
		})
	}
}

// comparePSA judges pods with Moat's sets at version and fails at the
// first verdict that differs from Pod Security Admission's. It returns the
// allowed and denied counts per level.
func comparePSA(t *testing.T, psa *psa, version string, pods []map[string]any) map[string][2]int {
	counts := map[string][2]int{}
	for _, l := range pssLevels(t, version) {
		for i, obj := range pods {
			want, reasons := psa.allowsAt(t, l.level, version, obj)
			got := verdicts(t, l.client, &unstructured.Unstructured{Object: obj})
			if want != (len(got) == 0) {
				js, _ := yaml.Marshal(obj)
				t.Fatalf("pod %d at %s %s: Pod Security Admission allows=%v (%s), Moat's constraints allow=%v (%s)\n%s",
					i, l.level, version, want, strings.Join(reasons, "; "), len(got) == 0, strings.Join(got, "; "), js)
			}
			n := counts[l.level]
			if want {
				n[0]++
			} else {
				n[1]++
			}
			counts[l.level] = n
		}
	}
	return counts
}

// pssLevels are the two levels with a client holding Moat's sets for each,
// at version.
func pssLevels(t *testing.T, version string) []pssLevel {
	return []pssLevel{
		{"baseline", pssClient(t, version, "baseline")},
		{"restricted", pssClient(t, version, "baseline", "restricted")},
	}
}

type pssLevel struct {
	level  string // as Pod Security Admission names it
	client gator.Client
}

// psaPods is the hand-written pods and then pods generated near every
// control's boundary, n in all, without resources: they are no part of
// either, and generated ones may not even parse.
func psaPods(t *testing.T, rng *rand.Rand, n int) []map[string]any {
	pods := handWrittenPods(t)
	for i := 0; len(pods) < n; i++ {
		obj := randomPod(rng, i)
		if i%2 == 0 {
			obj = nearlyCompliantPod(rng, i)
		}
		if obj["kind"] != "Pod" {
			continue
		}
		for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
			cs, _ := obj["spec"].(map[string]any)[list].([]any)
			for _, c := range cs {
				delete(c.(map[string]any), "resources")
			}
		}
		pods = append(pods, obj)
	}
	return pods
}

// handWrittenPods are the edges each control turns on, written out.
func handWrittenPods(t *testing.T) []map[string]any {
	docs := []string{
		// restricted-compliant
		`{spec: {securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}, containers: [{name: a, image: x, securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}}]}}`,
		// baseline-only: no seccomp, runs as pack.Root, keeps capabilities
		`{spec: {containers: [{name: a, image: x, securityContext: {capabilities: {add: [CHOWN]}}}]}}`,
		// Windows pod: exempt from restricted privilege escalation, seccomp, capabilities
		`{spec: {os: {name: windows}, securityContext: {runAsNonRoot: true}, containers: [{name: a, image: x}]}}`,
		// user namespace relaxes runAsNonRoot/runAsUser and procMount
		`{spec: {hostUsers: false, securityContext: {seccompProfile: {type: RuntimeDefault}}, containers: [{name: a, image: x, securityContext: {runAsUser: 0, procMount: Unmasked, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}}]}}`,
		// pod-level runAsUser 0 overridden by the container: still denied at restricted
		`{spec: {securityContext: {runAsNonRoot: true, runAsUser: 0, seccompProfile: {type: RuntimeDefault}}, containers: [{name: a, image: x, securityContext: {runAsUser: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}}]}}`,
		// hostPath volume nobody mounts: denied by baseline
		`{spec: {volumes: [{name: h, hostPath: {path: /etc}}], containers: [{name: a, image: x}]}}`,
		// AppArmor annotation unconfined, field RuntimeDefault
		`{metadata: {annotations: {container.apparmor.security.beta.kubernetes.io/a: unconfined}}, spec: {containers: [{name: a, image: x, securityContext: {appArmorProfile: {type: RuntimeDefault}}}]}}`,
		// capability spelled with CAP_: not in the baseline list
		`{spec: {containers: [{name: a, image: x, securityContext: {capabilities: {add: [CAP_CHOWN]}}}]}}`,
		// host port 0 is no host port
		`{spec: {containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 0}]}]}}`,
		// probe host
		`{spec: {containers: [{name: a, image: x, livenessProbe: {httpGet: {host: 10.0.0.1, port: 80}}}]}}`,
		// ephemeral container added by kubectl debug
		`{spec: {containers: [{name: a, image: x}], ephemeralContainers: [{name: d, image: busybox, securityContext: {privileged: true}}]}}`,
	}
	var out []map[string]any
	for i, d := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatalf("hand-written pod %d: %v", i, err)
		}
		m["apiVersion"], m["kind"] = "v1", "Pod"
		meta, _ := m["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		meta["name"], meta["namespace"] = fmt.Sprintf("hand-%d", i), "apps"
		m["metadata"] = meta
		out = append(out, m)
	}
	return out
}
