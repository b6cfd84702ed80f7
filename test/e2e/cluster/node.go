package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moat-dev/moat/provider/testenv"
)

// Node is one worker joined to a Cluster: containerd with runc and the CNI
// bridge, a kubelet, kube-proxy (iptables), the scheduler, CoreDNS as a
// pod, and an OCI registry the node pulls its images from, all inside the
// namespaces IsolateNode made.
type Node struct {
	Cluster  *Cluster
	Dir      string
	Registry string // host:port of the registry, plain HTTP, reachable from pods and the kubelet
	Bins     *NodeBinaries

	procs      []*Proc
	registry   *http.Server
	cgroupRoot string // the kubelet's cgroup root, under every hierarchy
	lock       *os.File
	socket     string // containerd's
}

// registryPort is the node registry's port on NodeIP.
const registryPort = "5000"

// StartNode starts the node and waits until it is Ready and CoreDNS
// answers. Stop it with Stop, also when StartNode failed.
func StartNode(ctx context.Context, c *Cluster, bins *NodeBinaries, dir string) (*Node, error) {
	if os.Getenv(isolatedEnv) == "" {
		return nil, errors.New("StartNode runs only inside IsolateNode's namespaces (call cluster.IsolateNode from TestMain)")
	}
	n := &Node{Cluster: c, Dir: dir, Bins: bins, Registry: net.JoinHostPort(NodeIP, registryPort),
		cgroupRoot: fmt.Sprintf("moat-node-%d", os.Getpid())}
	if err := n.start(ctx); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	cache, err := CacheDir()
	if err != nil {
		return err
	}
	// One node at a time on a machine: cgroups are global, and with the
	// lock held whatever a killed run left behind is swept first.
	if n.lock, err = os.OpenFile(filepath.Join(cache, ".node.lock"), os.O_CREATE|os.O_RDWR, 0o644); err != nil {
		return err
	}
	if err := syscall.Flock(int(n.lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	n.sweep()

	// The registry, inside the namespace, on the node's address.
	ln, err := net.Listen("tcp", n.Registry)
	if err != nil {
		return err
	}
	n.registry = &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = n.registry.Serve(ln) }()
	if _, err := n.Push("pause:3.10", StaticImage("pause", n.Bins.Pause)); err != nil {
		return fmt.Errorf("pushing the pause image: %w", err)
	}

	if err := n.startContainerd(); err != nil {
		return err
	}
	if err := n.startKubelet(ctx); err != nil {
		return err
	}
	sched, err := start(n.Dir, "kube-scheduler", nil, n.Bins.Scheduler,
		"--kubeconfig="+n.Cluster.Kubeconfig, "--leader-elect=false", "--secure-port=0", "--v=0")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, sched)
	if err := n.startProxy(); err != nil {
		return err
	}
	return n.startCoreDNS(ctx)
}

// Push builds img and pushes it to the node's registry as repoTag
// ("moat:dev"), and returns its digest reference.
func (n *Node) Push(repoTag string, img Image) (string, error) {
	built, err := img.Build()
	if err != nil {
		return "", err
	}
	ref, err := name.ParseReference(n.Registry+"/"+repoTag, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, built); err != nil {
		return "", err
	}
	d, err := built.Digest()
	if err != nil {
		return "", err
	}
	return ref.Context().Digest(d.String()).String(), nil
}

func (n *Node) startContainerd() error {
	d := filepath.Join(n.Dir, "containerd")
	for _, sub := range []string{"root", "state", "certs.d/" + n.Registry, "cni-conf", "cni-ipam"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	n.socket = filepath.Join(d, "containerd.sock")
	// The node's registry speaks plain HTTP.
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n", n.Registry, n.Registry)
	if err := os.WriteFile(filepath.Join(d, "certs.d", n.Registry, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "moat-node", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}`, PodCIDR, filepath.Join(d, "cni-ipam"))
	if err := os.WriteFile(filepath.Join(d, "cni-conf", "10-moat-node.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	// Settings this machine needs (../shared notes, measured): the bounding
	// set lacks CAP_SYS_RESOURCE, so runc must not raise oom_score_adj;
	// cgroupfs, not systemd; network namespaces under the state directory.
	config := fmt.Sprintf(`version = 3
root = %q
state = %q

[plugins.'io.containerd.server.v1.grpc']
  address = %q
[plugins.'io.containerd.server.v1.ttrpc']
  address = %q
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %q
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%q]
    conf_dir = %q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), n.socket, n.socket+".ttrpc",
		n.Registry+"/pause:3.10", filepath.Join(d, "certs.d"), n.Bins.Runc, n.Bins.CNIDir, filepath.Join(d, "cni-conf"))
	configFile := filepath.Join(d, "config.toml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		return err
	}
	// The shim is found on PATH, next to containerd.
	env := []string{"PATH=" + filepath.Dir(n.Bins.Containerd) + ":/usr/sbin:/usr/bin:/sbin:/bin"}
	p, err := start(n.Dir, "containerd", env, n.Bins.Containerd, "--config", configFile, "--log-level", "warn")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	return p.WaitFor("serving", 60*time.Second, func() error {
		_, err := os.Stat(n.socket)
		return err
	})
}

func (n *Node) startKubelet(ctx context.Context) error {
	d := filepath.Join(n.Dir, "kubelet")
	if err := os.MkdirAll(filepath.Join(d, "root"), 0o755); err != nil {
		return err
	}
	if err := n.makeCgroupRoot(); err != nil {
		return err
	}
	cert, key, err := issue(n.Cluster.ca, d, "kubelet", testenv.Leaf{CommonName: "system:node:" + NodeName,
		Groups: []string{"system:nodes"}, Client: true})
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(d, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, n.Cluster.Config.Host, n.Cluster.CAFile, cert, key); err != nil {
		return err
	}
	// Pods resolve names through CoreDNS only; nothing here reaches the
	// internet.
	resolv := filepath.Join(d, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+DNSServiceIP+"\n"), 0o644); err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /%s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %q
podLogsDir: /var/log/pods
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 50Mi, nodefs.available: 1%%, nodefs.inodesFree: 1%%, imagefs.available: 1%%}
maxPods: 60
staticPodPath: ""
# A Secret's update reaches its pods' volumes at the next sync (one minute by
# default): Gatekeeper waits for its own webhook certificate that way.
syncFrequency: 10s
`, NodeIP, n.Cluster.CAFile, n.cgroupRoot, n.socket, DNSServiceIP, resolv)
	configFile := filepath.Join(d, "config.yaml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		return err
	}
	env := []string{"PATH=" + filepath.Dir(n.Bins.Containerd) + ":/usr/sbin:/usr/bin:/sbin:/bin"}
	p, err := start(n.Dir, "kubelet", env, n.Bins.Kubelet, "--config="+configFile, "--kubeconfig="+kubeconfig,
		"--root-dir="+filepath.Join(d, "root"), "--cert-dir="+filepath.Join(d, "pki"),
		"--hostname-override="+NodeName, "--node-ip="+NodeIP, "--v=1")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	return p.WaitFor("Ready", 90*time.Second, func() error {
		node, err := n.Cluster.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("the node is not Ready")
	})
}

func (n *Node) startProxy() error {
	d := filepath.Join(n.Dir, "kube-proxy")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	// conntrack at zero: kube-proxy leaves the machine-wide conntrack table
	// size as it is.
	config := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0}
`, n.Cluster.Kubeconfig, PodCIDR, NodeName, NodeIP)
	configFile := filepath.Join(d, "config.yaml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		return err
	}
	p, err := start(n.Dir, "kube-proxy", []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, n.Bins.Proxy, "--config="+configFile, "--v=0")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	return p.WaitFor("healthy", 60*time.Second, func() error { return HTTPOK("http://127.0.0.1:10256/healthz") })
}

// coreDNS is the cluster's DNS as kubeadm installs it, as a restricted pod:
// cluster.local only (nothing to forward to here).
const coreDNS = `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:coredns}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
        loop
        reload
    }
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: %s
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: coredns
        image: %s
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
        resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
`

func (n *Node) startCoreDNS(ctx context.Context) error {
	ref, err := n.Push("coredns:moat-node", StaticImage("coredns", n.Bins.CoreDNS, "53/udp", "53/tcp"))
	if err != nil {
		return err
	}
	objs, err := Decode([]byte(fmt.Sprintf(coreDNS, DNSServiceIP, ref)))
	if err != nil {
		return err
	}
	a, err := n.Cluster.Applier()
	if err != nil {
		return err
	}
	for _, o := range objs {
		if _, err := a.Apply(ctx, o); err != nil {
			return fmt.Errorf("CoreDNS %s: %w", o.GetKind(), err)
		}
	}
	return Poll(ctx, 120*time.Second, func() error { return n.DeploymentReady(ctx, "kube-system", "coredns") })
}

// DeploymentReady is nil when every replica of the Deployment is updated
// and ready.
func (n *Node) DeploymentReady(ctx context.Context, ns, name string) error {
	d, err := n.Cluster.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != want || d.Status.ReadyReplicas != want || d.Status.Replicas != want {
		return fmt.Errorf("deployment %s/%s: %d of %d ready (%d updated, %d in all)", ns, name, d.Status.ReadyReplicas, want,
			d.Status.UpdatedReplicas, d.Status.Replicas)
	}
	return nil
}

// cgroupHierarchies are the mounted cgroup v1 hierarchies (or the one v2
// hierarchy).
func cgroupHierarchies() []string {
	const base = "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err == nil {
		return []string{base}
	}
	entries, _ := os.ReadDir(base)
	var hs []string
	for _, e := range entries {
		p := filepath.Join(base, e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			hs = append(hs, p)
		}
	}
	return hs
}

// makeCgroupRoot creates the kubelet's cgroup root in every hierarchy (the
// kubelet requires it to exist), with cpuset's CPUs and memory nodes
// copied from the parent.
func (n *Node) makeCgroupRoot() error {
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, n.cgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Stop stops the node: every container (by killing what is left in the
// kubelet's cgroups), the kubelet, kube-proxy, the scheduler, containerd
// and its shims, by PID; removes the cgroups; and unmounts what the
// kubelet and containerd mounted under the node's directory. Safe to call
// more than once, and after a failed start.
func (n *Node) Stop() {
	for i := len(n.procs) - 1; i >= 0; i-- {
		if n.procs[i].Name == "containerd" {
			continue // last: it owns the containers the kubelet stops
		}
		n.procs[i].Stop()
	}
	killCgroup(n.cgroupRoot)
	for _, p := range n.procs {
		p.Stop()
	}
	n.procs = nil
	if n.Bins != nil {
		killByExe(n.Bins.Shim)
	}
	killCgroup(n.cgroupRoot)
	unmountUnder(n.Dir)
	if n.registry != nil {
		_ = n.registry.Close()
	}
	if n.lock != nil {
		n.lock.Close()
		n.lock = nil
	}
}

// sweep removes what a run that was killed before its Stop left behind:
// the shims of the cached containerd, and the moat-node-* cgroups with
// whatever still runs in them. Called with the node lock held, so no live
// node owns them.
func (n *Node) sweep() {
	killByExe(n.Bins.Shim)
	for _, h := range cgroupHierarchies() {
		old, _ := filepath.Glob(filepath.Join(h, "moat-node-*"))
		for _, o := range old {
			killCgroup(filepath.Base(o))
		}
	}
}

// killCgroup kills every process in the cgroup root (in every hierarchy),
// until none is left, and removes its cgroups depth-first.
func killCgroup(root string) {
	for attempt := 0; attempt < 50; attempt++ {
		alive := 0
		for _, h := range cgroupHierarchies() {
			_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(data)) {
					if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
						_ = syscall.Kill(pid, syscall.SIGKILL)
						alive++
					}
				}
				return nil
			})
		}
		if alive == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, h := range cgroupHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // children first
			_ = os.Remove(dirs[i])
		}
	}
}

// killByExe kills every process whose executable is exe.
func killByExe(exe string) {
	if exe == "" {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink(filepath.Join("/proc", p.Name(), "exe")); err == nil && target == exe {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountUnder lazily unmounts every mount point under dir, deepest first
// (the kubelet's volumes, containerd's root file systems), so the directory
// can be removed.
func unmountUnder(dir string) {
	if dir == "" {
		return
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// Kubectl-free helpers for tests.

// Helm runs the helm CLI against the cluster and returns its combined
// output.
func (n *Node) Helm(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, n.Bins.Helm, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+n.Cluster.Kubeconfig, "HELM_CACHE_HOME="+filepath.Join(n.Dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(n.Dir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(n.Dir, "helm", "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
