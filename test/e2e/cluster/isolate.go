package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// The node's network, inside the namespace IsolateNode makes: the node's
// address on an interface of its own, the pods' bridge, the Services' range.
const (
	NodeIP       = "10.250.0.10"
	PodCIDR      = "10.244.0.0/24"
	ServiceCIDR  = "10.96.0.0/16"
	APIServiceIP = "10.96.0.1"
	DNSServiceIP = "10.96.0.10"
	NodeName     = "moat-node"
)

const isolatedEnv = "MOAT_NODE_ISOLATED"

// IsolateNode runs prepare, then the test binary again inside a new
// network namespace and a new mount namespace, and returns its exit code:
// call it from TestMain as os.Exit(cluster.IsolateNode(m, prepare)).
// prepare runs outside, where the Go module proxy is reachable: it builds
// what the tests need (Build, BuildNode), which inside are then found in
// the cache (GOPROXY=off there: a missing module fails at once, by name).
// Inside, the node's addresses, bridge, iptables rules and mounts exist only
// in those namespaces and end with the test process: the host's network,
// iptables and mounts are never touched. Needs root (CAP_SYS_ADMIN and
// CAP_NET_ADMIN); without it the tests fail with the reason.
func IsolateNode(m *testing.M, prepare func() error) int {
	if os.Getenv(isolatedEnv) == "" {
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "the node tests need root: they create network and mount namespaces, cgroups and containers (run them as root, as CI does)")
			return 1
		}
		if err := prepare(); err != nil {
			fmt.Fprintln(os.Stderr, "preparing the node tests:", err)
			return 1
		}
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), isolatedEnv+"=1", "GOPROXY=off")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "starting the isolated test process:", err)
			return 1
		}
		return 0
	}
	if err := setUpNamespaces(); err != nil {
		fmt.Fprintln(os.Stderr, "setting up the node's namespaces:", err)
		return 1
	}
	return m.Run()
}

// runtimeDirs are the places containerd, runc, CNI and the kubelet write
// to whatever their configuration says; each gets a tmpfs of this mount
// namespace, so nothing they write there reaches the host.
var runtimeDirs = []string{"/run/containerd", "/run/netns", "/var/lib/cni", "/var/log/containers", "/var/log/pods", "/run/runc"}

func setUpNamespaces() error {
	// Mounts made from here on stay in this namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	for _, d := range runtimeDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", d, err)
		}
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		// The node's interface: a veth pair with both ends here (this
		// kernel has no dummy driver); the peer only gives it a carrier.
		{"link", "add", "moat0", "type", "veth", "peer", "name", "moat1"},
		{"addr", "add", NodeIP + "/24", "dev", "moat0"},
		{"link", "set", "moat1", "up"},
		{"link", "set", "moat0", "up"},
		// Service addresses are translated by kube-proxy's rules after the
		// route is chosen: they need one.
		{"route", "add", "default", "dev", "moat0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w\n%s", args, err, out)
		}
	}
	for file, value := range map[string]string{
		"net/ipv4/ip_forward": "1",
		// Pod-to-Service traffic crosses the bridge: kube-proxy's rules must
		// see it (br_netfilter, per network namespace).
		"net/bridge/bridge-nf-call-iptables": "1",
	} {
		if err := os.WriteFile(filepath.Join("/proc/sys", file), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", file, err)
		}
	}
	return nil
}
