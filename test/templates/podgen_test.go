package templates_test

import (
	"fmt"
	"math/rand/v2"
)

// randomPod builds a pod whose security-relevant fields are drawn at random,
// including the spellings that public templates get wrong (capability case
// and CAP_ prefixes, quantity forms, path prefixes, registry look-alikes).
func randomPod(r *rand.Rand, i int) map[string]any {
	switch r.IntN(20) {
	case 0, 1:
		return randomService(r, i)
	case 2:
		return randomIngress(r, i)
	case 3:
		return randomNode(r, i)
	}
	spec := map[string]any{}
	for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
		n := 0
		switch {
		case list == "containers" && r.IntN(40) == 0:
			n = 0 // an edge the API server refuses, but audit and expansion may meet
		case list == "containers":
			n = 1 + r.IntN(3)
		case r.IntN(3) == 0:
			n = 1 + r.IntN(2)
		}
		if n == 0 {
			continue
		}
		var cs []any
		for j := range n {
			cs = append(cs, randomContainer(r, fmt.Sprintf("%s-%d", list[:4], j)))
		}
		spec[list] = cs
	}
	maybe(r, spec, "hostPID", r.IntN(2) == 0)
	maybe(r, spec, "hostIPC", r.IntN(2) == 0)
	maybe(r, spec, "hostNetwork", r.IntN(2) == 0)
	maybe(r, spec, "automountServiceAccountToken", r.IntN(2) == 0)
	if r.IntN(5) == 0 {
		spec["hostUsers"] = r.IntN(2) == 0
	}
	if r.IntN(2) == 0 {
		var vols []any
		for k, p := range some(r, hostPaths) {
			vols = append(vols, map[string]any{"name": fmt.Sprintf("h%d", k), "hostPath": map[string]any{"path": p}})
		}
		vols = append(vols, map[string]any{"name": "scratch", "emptyDir": map[string]any{}})
		for k, t := range some(r, []string{"configMap", "secret", "nfs", "projected", "csi", "image", "gitRepo"}) {
			vols = append(vols, map[string]any{"name": fmt.Sprintf("v%d", k), t.(string): map[string]any{}})
		}
		spec["volumes"] = vols
		for _, list := range []string{"containers", "initContainers"} {
			cs, _ := spec[list].([]any)
			for _, c := range cs {
				var ms []any
				for k := range len(vols) {
					if r.IntN(2) == 0 {
						ms = append(ms, map[string]any{"name": vols[k].(map[string]any)["name"], "mountPath": fmt.Sprintf("/m%d", k), "readOnly": r.IntN(2) == 0})
					}
				}
				if len(ms) > 0 { // the API server never sends null lists
					c.(map[string]any)["volumeMounts"] = ms
				}
			}
		}
	}
	if r.IntN(3) == 0 {
		spec["securityContext"] = randomSecurityContext(r, true)
	}
	if r.IntN(6) == 0 {
		spec["os"] = map[string]any{"name": pick(r, "windows", "linux")}
	}
	meta := map[string]any{"name": fmt.Sprintf("pod-%d", i), "namespace": pick(r, "apps", "default", "prod")}
	if r.IntN(4) == 0 {
		ann := map[string]any{}
		for _, list := range []string{"containers", "initContainers"} {
			cs, _ := spec[list].([]any)
			for _, c := range cs {
				if r.IntN(2) == 0 {
					ann["container.apparmor.security.beta.kubernetes.io/"+c.(map[string]any)["name"].(string)] = pick(r, "runtime/default", "unconfined", "localhost/p", "")
				}
				// the seccomp annotations, judged by versions before 1.19
				if r.IntN(3) == 0 {
					ann["container.seccomp.security.alpha.kubernetes.io/"+c.(map[string]any)["name"].(string)] = pick(r, "runtime/default", "docker/default", "unconfined", "localhost/p", "")
				}
			}
		}
		if r.IntN(3) == 0 {
			ann["seccomp.security.alpha.kubernetes.io/pod"] = pick(r, "runtime/default", "unconfined", "localhost/p")
		}
		meta["annotations"] = ann
	}
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   meta,
		"spec":       spec,
	}
}

var images = []string{
	"nginx", "nginx:1.27", "docker.io/library/nginx:1.27", "busybox", "docker.io/library/busybox:1.36",
	"registry.example.com/trusted/agent:2", "registry.example.com/trustedx/agent:2", "istio/proxyv2:1.22",
	"myregistry.io/app:v1", "myregistry.io.evil.com/app:v1", "evil.io/myregistry.io/app:v1",
	"ghcr.io/org/app@sha256:" + "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd",
	"index.docker.io/library/nginx", "bitnami/redis:7", "myregistry.io:5000/app", "localhost/app:1",
	"myregistry.io/team/app:v1@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	"evil.io/x/myregistry.io/app", "mcr.microsoft.com/oss/kubernetes/pause:3.9",
}

func randomContainer(r *rand.Rand, name string) map[string]any {
	c := map[string]any{"name": pick(r, name, name, "istio-init", "tool", "agent"), "image": pick(r, images...)}
	if r.IntN(3) == 0 {
		var ports []any
		for _, hp := range some(r, []int64{0, 22, 80, 8000, 8080, 8081, 9001, 30000, 31000, 32767, 32768}) {
			ports = append(ports, map[string]any{"containerPort": int64(8080), "hostPort": hp})
		}
		if len(ports) > 0 {
			c["ports"] = ports
		}
	}
	if r.IntN(3) > 0 {
		c["securityContext"] = randomSecurityContext(r, false)
	}
	if r.IntN(5) == 0 {
		probe := pick(r, "livenessProbe", "readinessProbe", "startupProbe")
		handler := pick(r, "httpGet", "tcpSocket")
		h := map[string]any{"port": int64(8080)}
		if r.IntN(2) == 0 {
			h["host"] = pick(r, "", "10.0.0.1")
		}
		if r.IntN(2) == 0 {
			c[probe] = map[string]any{handler: h}
		} else {
			c["lifecycle"] = map[string]any{pick(r, "postStart", "preStop"): map[string]any{handler: h}}
		}
	}
	if r.IntN(4) > 0 {
		limits := map[string]any{}
		if r.IntN(4) > 0 {
			limits["cpu"] = pick(r, quantities...)
		}
		if r.IntN(4) > 0 {
			limits["memory"] = pick(r, quantities...)
		}
		c["resources"] = map[string]any{"limits": limits}
	}
	return c
}

func randomSecurityContext(r *rand.Rand, pod bool) map[string]any {
	sc := map[string]any{}
	if !pod {
		maybe(r, sc, "privileged", r.IntN(2) == 0)
		maybe(r, sc, "allowPrivilegeEscalation", r.IntN(2) == 0)
		maybe(r, sc, "readOnlyRootFilesystem", r.IntN(2) == 0)
	}
	if r.IntN(6) == 0 {
		sc["seLinuxOptions"] = pick(r,
			map[string]any{"type": "container_t"}, map[string]any{"type": "spc_t"}, map[string]any{"user": "system_u"},
			map[string]any{"role": ""}, map[string]any{"level": "s0:c1,c2"}, map[string]any{"type": ""})
	}
	if r.IntN(4) == 0 {
		sc["seccompProfile"] = map[string]any{"type": pick(r, "RuntimeDefault", "Localhost", "Unconfined")}
	}
	if r.IntN(4) == 0 {
		sc["appArmorProfile"] = pick(r, map[string]any{"type": "RuntimeDefault"}, map[string]any{"type": "Unconfined"},
			map[string]any{"type": "Localhost", "localhostProfile": "k8s-nginx"})
	}
	if r.IntN(8) == 0 {
		sc["windowsOptions"] = map[string]any{"hostProcess": r.IntN(2) == 0}
	}
	if pod && r.IntN(4) == 0 {
		var ss []any
		for _, n := range some(r, []string{"net.ipv4.tcp_syncookies", "kernel.msgmax", "net.ipv4.tcp_rmem", "net.core.somaxconn"}) {
			ss = append(ss, map[string]any{"name": n, "value": "1"})
		}
		if len(ss) > 0 {
			sc["sysctls"] = ss
		}
	}
	if !pod && r.IntN(6) == 0 {
		sc["procMount"] = pick(r, "Default", "Unmasked")
	}
	if !pod && r.IntN(2) == 0 {
		caps := map[string]any{}
		if r.IntN(2) == 0 {
			caps["add"] = some(r, capabilities)
		}
		if r.IntN(2) == 0 {
			caps["drop"] = some(r, capabilities)
		}
		sc["capabilities"] = caps
	}
	maybe(r, sc, "runAsNonRoot", r.IntN(2) == 0)
	if r.IntN(3) == 0 {
		sc["runAsUser"] = int64(pick(r, 0, 1, 999, 1000, 1500, 2000, 65534))
	}
	if r.IntN(4) == 0 {
		sc["runAsGroup"] = int64(pick(r, 0, 5, 1000, 1001))
	}
	if pod && r.IntN(4) == 0 {
		sc["fsGroup"] = int64(pick(r, 0, 2000, 2500, 3000))
	}
	if pod && r.IntN(4) == 0 {
		sc["supplementalGroups"] = []any{int64(pick(r, 3001, 4000)), int64(pick(r, 3002, 3999))}
	}
	return sc
}

// maybe sets k to v two times in three.
func maybe(r *rand.Rand, m map[string]any, k string, v any) {
	if r.IntN(3) > 0 {
		m[k] = v
	}
}

func randomService(r *rand.Rand, i int) map[string]any {
	var ports []any
	for _, p := range some(r, []int64{80, 443, 6001, 8443, 22}) {
		ports = append(ports, map[string]any{"port": p})
	}
	if len(ports) == 0 {
		ports = append(ports, map[string]any{"port": int64(443)})
	}
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Service",
		"metadata":   map[string]any{"name": fmt.Sprintf("svc-%d", i), "namespace": pick(r, "apps", "default")},
		"spec":       map[string]any{"ports": ports},
	}
}

// quantities in every spelling Kubernetes accepts, near the suites'
// maxima (500m, 1.5Gi), and some it refuses.
var quantities = []string{
	"500m", "0.5", ".5", "5e-1", "0.5000", "501m", "499m", "1", "1.", "2", "+1", "100m", "0.1", "1e-1",
	"1.5Gi", "1536Mi", "1572864Ki", "1610612736", "1610612737", "1.6G", "1.7e9", "1.61e9", "1.7G",
	"1Gi", "1G", "1E", "1Ei", "1e3", "1E3", "250m", "0", "12n", "3u", "7k",
	"1.5 Gi", "abc", "1e", "Gi", "1.5gi", "--1", "1..5", "", "-", "+", ".", "e3", "+.5", ".Gi", "1e+3",
	"1E-3", "1e3Mi", "-1", "1e1.5", "0.0000000001", "12345678901234567890", "1.5Ei",
}

func randomIngress(r *rand.Rand, i int) map[string]any {
	meta := map[string]any{"name": fmt.Sprintf("ing-%d", i), "namespace": "apps"}
	if r.IntN(2) == 0 {
		meta["annotations"] = map[string]any{"kubernetes.io/ingress.allow-http": pick(r, "false", "true", "")}
	}
	spec := map[string]any{"rules": []any{map[string]any{"host": "shop.example.com"}}}
	if r.IntN(2) == 0 {
		spec["tls"] = []any{map[string]any{"secretName": "tls"}}
	}
	return map[string]any{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
}

func randomNode(r *rand.Rand, i int) map[string]any {
	return map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": fmt.Sprintf("node-%d", i)},
		"status": map[string]any{"nodeInfo": map[string]any{
			"kubeletVersion": pick(r, "v1.31.2", "v1.30.0-eks-1", "v1.29.10", "v1.9.99", "unknown", "1.30.1"),
			"osImage":        pick(r, "Ubuntu 22.04.4 LTS", "Ubuntu 18.04.6 LTS", "Azure Linux 3.0", "Windows Server 2022"),
		}},
	}
}

var hostPaths = []string{"/foo", "/foo/bar", "/fool", "/foo/../etc", "/var/log/pods", "/var/logx", "/data/x", "/", "/etc"}

var capabilities = []string{
	"ALL", "all", "SYS_ADMIN", "CAP_SYS_ADMIN", "sys_admin", "NET_ADMIN", "NET_RAW", "cap_net_raw",
	"NET_BIND_SERVICE", "CAP_NET_BIND_SERVICE", "CHOWN", "MKNOD", "SYS_TIME",
}

// some is 0 to 3 items of xs.
func some[T any](r *rand.Rand, xs []T) []any {
	out := []any{}
	for range r.IntN(4) {
		out = append(out, xs[r.IntN(len(xs))])
	}
	return out
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }
