package cluster

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// NodeBinaries are the programs a node adds to the control plane, by
// absolute path, and the images its pods run.
type NodeBinaries struct {
	Kubelet, Scheduler, Proxy string
	Containerd, Shim, Ctr     string
	CoreDNS                   string
	// Pause is the sandbox program (test/e2e/cluster/pause); Moat is
	// `moat` built as the Dockerfile builds it (moat_slim, static); Helm is
	// the helm CLI of tools/helm.
	Pause, Moat, Helm string
	// Runc, and the directory of the CNI plugins, from Debian
	// (hack/deps.sh).
	Runc, CNIDir string
}

// Debian's paths of runc and the CNI plugins (packages runc and
// containernetworking-plugins).
const (
	runcPath = "/usr/sbin/runc"
	cniDir   = "/usr/lib/cni"
)

// BuildNode returns the node's binaries for the pinned versions, building
// those not yet in the cache directory: kubelet, kube-scheduler and
// kube-proxy from tools/kube (the control plane's release), containerd from
// tools/containerd, CoreDNS from tools/coredns, helm from tools/helm. Moat
// and the pause program are built from this repository on every call (the
// Go build cache makes that seconds), into dir.
func BuildNode(root, dir string, log io.Writer) (*NodeBinaries, error) {
	kubeVersion, err := required(filepath.Join(root, "tools", "kube", "go.mod"), kubeModule)
	if err != nil {
		return nil, err
	}
	containerdVersion, err := required(filepath.Join(root, "tools", "containerd", "go.mod"), "github.com/containerd/containerd/v2")
	if err != nil {
		return nil, err
	}
	corednsVersion, err := required(filepath.Join(root, "tools", "coredns", "go.mod"), "github.com/coredns/coredns")
	if err != nil {
		return nil, err
	}
	helmVersion, err := required(filepath.Join(root, "tools", "helm", "go.mod"), "helm.sh/helm/v3")
	if err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	lock, err := lockCache(cache)
	if err != nil {
		return nil, err
	}
	defer lock.Close()

	kubeDir, ldflags, err := kubeBuild(root, cache, kubeVersion)
	if err != nil {
		return nil, err
	}
	nodeDir := kubeDir + "-node"
	err = buildOnce(nodeDir, log, "kubelet, kube-scheduler and kube-proxy "+kubeVersion, func(tmp string) *exec.Cmd {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", tmp+string(filepath.Separator),
			"k8s.io/kubernetes/cmd/kubelet", "k8s.io/kubernetes/cmd/kube-scheduler", "k8s.io/kubernetes/cmd/kube-proxy")
		cmd.Dir = filepath.Join(root, "tools", "kube")
		return cmd
	})
	if err != nil {
		return nil, err
	}
	containerdDir := filepath.Join(cache, "containerd-"+containerdVersion)
	err = buildOnce(containerdDir, log, "containerd "+containerdVersion, func(tmp string) *exec.Cmd {
		// The snapshotters that need C headers are left out: the node uses
		// overlayfs.
		cmd := exec.Command("go", "build", "-trimpath", "-tags", "no_btrfs no_devmapper no_zfs", "-ldflags", "-s -w",
			"-o", tmp+string(filepath.Separator),
			"github.com/containerd/containerd/v2/cmd/containerd", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
			"github.com/containerd/containerd/v2/cmd/ctr")
		cmd.Dir = filepath.Join(root, "tools", "containerd")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		return cmd
	})
	if err != nil {
		return nil, err
	}
	corednsDir := filepath.Join(cache, "coredns-"+corednsVersion)
	err = buildOnce(corednsDir, log, "CoreDNS "+corednsVersion, func(tmp string) *exec.Cmd {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", tmp+string(filepath.Separator), "github.com/coredns/coredns")
		cmd.Dir = filepath.Join(root, "tools", "coredns")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		return cmd
	})
	if err != nil {
		return nil, err
	}
	helmDir := filepath.Join(cache, "helm-"+helmVersion)
	err = buildOnce(helmDir, log, "helm "+helmVersion, func(tmp string) *exec.Cmd {
		// The flags `go tool helm` builds with (none), so the packages the
		// chart tests compiled are reused: a link, not a build.
		cmd := exec.Command("go", "build", "-o", tmp+string(filepath.Separator), "helm.sh/helm/v3/cmd/helm")
		cmd.Dir = filepath.Join(root, "tools", "helm")
		return cmd
	})
	if err != nil {
		return nil, err
	}

	b := &NodeBinaries{
		Kubelet: filepath.Join(nodeDir, "kubelet"), Scheduler: filepath.Join(nodeDir, "kube-scheduler"),
		Proxy:      filepath.Join(nodeDir, "kube-proxy"),
		Containerd: filepath.Join(containerdDir, "containerd"), Shim: filepath.Join(containerdDir, "containerd-shim-runc-v2"),
		Ctr: filepath.Join(containerdDir, "ctr"), CoreDNS: filepath.Join(corednsDir, "coredns"),
		Helm: filepath.Join(helmDir, "helm"), Runc: runcPath, CNIDir: cniDir,
		Pause: filepath.Join(dir, "pause"), Moat: filepath.Join(dir, "moat"),
	}
	// As the Dockerfile builds it.
	for _, c := range []struct {
		out  string
		args []string
	}{
		{b.Moat, []string{"-tags", "moat_slim", "./provider/cmd/moat"}},
		{b.Pause, []string{"./test/e2e/cluster/pause"}},
	} {
		cmd := exec.Command("go", append([]string{"build", "-trimpath", "-ldflags", "-s -w", "-o", c.out}, c.args...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %v: %w\n%s", c.args, err, out)
		}
	}
	for _, p := range []string{b.Kubelet, b.Scheduler, b.Proxy, b.Containerd, b.Shim, b.Ctr, b.CoreDNS, b.Helm, b.Runc,
		filepath.Join(b.CNIDir, "bridge"), filepath.Join(b.CNIDir, "host-local"), filepath.Join(b.CNIDir, "loopback"), filepath.Join(b.CNIDir, "portmap")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("the node needs %s (runc and the CNI plugins come from Debian: make deps): %w", p, err)
		}
	}
	return b, nil
}
