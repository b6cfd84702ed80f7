package templates_test

import (
	"fmt"
	"math/rand/v2"
)

// nearlyCompliantPod is a pod that meets the restricted level, changed in
// zero, one or two places by deviations one control at a time turns on, so
// both verdicts occur near every boundary.
func nearlyCompliantPod(r *rand.Rand, i int) map[string]any {
	container := func(name string) map[string]any {
		return map[string]any{"name": name, "image": "registry.example.com/app:1", "securityContext": map[string]any{
			"allowPrivilegeEscalation": false,
			"capabilities":             map[string]any{"drop": []any{"ALL"}},
		}}
	}
	spec := map[string]any{
		"securityContext": map[string]any{"runAsNonRoot": true, "seccompProfile": map[string]any{"type": "RuntimeDefault"}},
		"containers":      []any{container("app")},
	}
	if r.IntN(2) == 0 {
		spec["initContainers"] = []any{container("init")}
	}
	if r.IntN(3) == 0 {
		spec["ephemeralContainers"] = []any{container("debug")}
	}
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": fmt.Sprintf("near-%d", i), "namespace": "apps", "annotations": map[string]any{}},
		"spec":     spec,
	}
	for range r.IntN(3) {
		deviations[r.IntN(len(deviations))](r, pod)
	}
	return pod
}

func anyContainer(r *rand.Rand, pod map[string]any) map[string]any {
	spec := pod["spec"].(map[string]any)
	var all []any
	for _, l := range []string{"containers", "initContainers", "ephemeralContainers"} {
		cs, _ := spec[l].([]any)
		all = append(all, cs...)
	}
	return all[r.IntN(len(all))].(map[string]any)
}

func sc(c map[string]any) map[string]any { return c["securityContext"].(map[string]any) }

func podSC(pod map[string]any) map[string]any {
	return pod["spec"].(map[string]any)["securityContext"].(map[string]any)
}

var deviations = []func(*rand.Rand, map[string]any){
	func(r *rand.Rand, p map[string]any) { sc(anyContainer(r, p))["privileged"] = r.IntN(2) == 0 },
	func(r *rand.Rand, p map[string]any) { sc(anyContainer(r, p))["allowPrivilegeEscalation"] = true },
	func(r *rand.Rand, p map[string]any) { delete(sc(anyContainer(r, p)), "allowPrivilegeEscalation") },
	func(r *rand.Rand, p map[string]any) {
		sc(anyContainer(r, p))["capabilities"] = map[string]any{"drop": []any{"ALL"}, "add": []any{pick(r, "NET_BIND_SERVICE", "CHOWN", "SYS_ADMIN", "CAP_NET_BIND_SERVICE")}}
	},
	func(r *rand.Rand, p map[string]any) { delete(sc(anyContainer(r, p)), "capabilities") },
	func(r *rand.Rand, p map[string]any) {
		sc(anyContainer(r, p))["capabilities"] = map[string]any{"drop": []any{pick(r, "NET_RAW", "all", "ALL")}}
	},
	func(r *rand.Rand, p map[string]any) { delete(podSC(p), "runAsNonRoot") },
	func(r *rand.Rand, p map[string]any) { podSC(p)["runAsNonRoot"] = false },
	func(r *rand.Rand, p map[string]any) { sc(anyContainer(r, p))["runAsNonRoot"] = r.IntN(2) == 0 },
	func(r *rand.Rand, p map[string]any) { sc(anyContainer(r, p))["runAsUser"] = int64(pick(r, 0, 1000)) },
	func(r *rand.Rand, p map[string]any) { podSC(p)["runAsUser"] = int64(pick(r, 0, 1000)) },
	func(r *rand.Rand, p map[string]any) { delete(podSC(p), "seccompProfile") },
	func(r *rand.Rand, p map[string]any) {
		sc(anyContainer(r, p))["seccompProfile"] = map[string]any{"type": pick(r, "Unconfined", "Localhost", "RuntimeDefault")}
	},
	func(r *rand.Rand, p map[string]any) {
		p["spec"].(map[string]any)["os"] = map[string]any{"name": "windows"}
	},
	func(r *rand.Rand, p map[string]any) { p["spec"].(map[string]any)["hostUsers"] = false },
	func(r *rand.Rand, p map[string]any) {
		p["spec"].(map[string]any)[pick(r, "hostPID", "hostIPC", "hostNetwork")] = true
	},
	func(r *rand.Rand, p map[string]any) {
		c := anyContainer(r, p)
		c["ports"] = []any{map[string]any{"containerPort": int64(80), "hostPort": int64(pick(r, 0, 80))}}
	},
	func(r *rand.Rand, p map[string]any) {
		p["spec"].(map[string]any)["volumes"] = []any{map[string]any{"name": "v", pick(r, "hostPath", "nfs", "configMap", "emptyDir", "image"): map[string]any{}}}
	},
	func(r *rand.Rand, p map[string]any) {
		sc(anyContainer(r, p))["procMount"] = pick(r, "Unmasked", "Default")
	},
	func(r *rand.Rand, p map[string]any) {
		sc(anyContainer(r, p))["seLinuxOptions"] = map[string]any{pick(r, "type", "user", "role"): pick(r, "container_t", "spc_t", "", "container_engine_t")}
	},
	func(r *rand.Rand, p map[string]any) {
		podSC(p)["sysctls"] = []any{map[string]any{"name": pick(r, "net.ipv4.tcp_syncookies", "kernel.msgmax", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_fin_timeout",
			"net.ipv4.tcp_rmem", "net.ipv4.tcp_notsent_lowat", "net.ipv4.tcp_slow_start_after_idle"), "value": "1"}}
	},
	func(r *rand.Rand, p map[string]any) {
		sc(anyContainer(r, p))["appArmorProfile"] = map[string]any{"type": pick(r, "RuntimeDefault", "Unconfined", "Localhost")}
	},
	func(r *rand.Rand, p map[string]any) {
		c := anyContainer(r, p)
		p["metadata"].(map[string]any)["annotations"].(map[string]any)["container.apparmor.security.beta.kubernetes.io/"+c["name"].(string)] = pick(r, "runtime/default", "unconfined", "localhost/x")
	},
	// the seccomp annotations, which versions before 1.19 judge
	func(r *rand.Rand, p map[string]any) {
		key := "seccomp.security.alpha.kubernetes.io/pod"
		if r.IntN(2) == 0 {
			key = "container.seccomp.security.alpha.kubernetes.io/" + anyContainer(r, p)["name"].(string)
		}
		p["metadata"].(map[string]any)["annotations"].(map[string]any)[key] = pick(r, "runtime/default", "docker/default", "unconfined", "localhost/x", "localhost")
	},
	func(r *rand.Rand, p map[string]any) {
		sc(anyContainer(r, p))["windowsOptions"] = map[string]any{"hostProcess": r.IntN(2) == 0}
	},
	func(r *rand.Rand, p map[string]any) {
		anyContainer(r, p)["readinessProbe"] = map[string]any{"tcpSocket": map[string]any{"port": int64(80), "host": pick(r, "", "10.0.0.1")}}
	},
}
