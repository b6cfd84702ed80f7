package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/moat-dev/moat/provider/testenv"
	"github.com/moat-dev/moat/test/e2e/cluster"
)

// nodeVulnerabilities: two Node objects of an AKS cluster's pools in the
// real API server, each with a boot ID; `moat node-scan` for each, against
// a copy of this machine's Debian root (the user pool's with its packages,
// the system pool's with none) and a database marking the installed bash
// critical. Gatekeeper's audit then lists the user pool's node with its
// pool, the CVE, its package and fixed version, and the upgrade command,
// and not the clean node. No kubelet runs here: the nodes' status is
// written as a kubelet would, a stand-in for it.
func (e *e2e) nodeVulnerabilities(t *testing.T, dir string) {
	ctx := context.Background()
	base := filepath.Join(dir, "node-scan")
	db := filepath.Join(base, "vulnerability.db")
	must(t, os.MkdirAll(base, 0o700))
	bash := testenv.WriteHostDB(t, db)

	type node struct{ name, pool, boot string }
	vulnerable := node{"aks-user-0", "user", "3f2c9a1e-5b7d-4c8e-9f01-2a3b4c5d6e7f"}
	clean := node{"aks-system-0", "system", "8e7d6c5b-4a39-4281-8f7e-6d5c4b3a2918"}
	for _, n := range []node{vulnerable, clean} {
		// As a kubelet registers: with its version (the Defender set's
		// MoatNodeVersion, enforced here, judges Node admission) and boot ID.
		info := corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OSImage: "Debian GNU/Linux 12 (bookworm)", BootID: n.boot}
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{"kubernetes.azure.com/agentpool": n.pool}},
			Status: corev1.NodeStatus{NodeInfo: info}}
		created, err := e.client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
		must(t, err)
		defer e.client.CoreV1().Nodes().Delete(ctx, n.name, metav1.DeleteOptions{}) //nolint:errcheck
		if created.Status.NodeInfo.BootID != n.boot {
			created.Status.NodeInfo = info
			_, err = e.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
			must(t, err)
		}
	}

	metrics := map[string]string{}
	for _, n := range []node{vulnerable, clean} {
		ndir := filepath.Join(base, n.name)
		root, _ := testenv.HostRoot(t, ndir, n == clean)
		bootFile := filepath.Join(ndir, "boot_id")
		must(t, os.WriteFile(bootFile, []byte(n.boot+"\n"), 0o644))
		addrs, err := cluster.FreeAddrs(1)
		must(t, err)
		p, err := cluster.StartProc(dir, "moat-node-scan-"+n.name, e.moatBin, "node-scan",
			"--node-name", n.name, "--root", root, "--boot-id-file", bootFile, "--metrics-addr", addrs[0],
			"--provider-url", "https://"+e.moatReports+"/v1/node-report", "--provider-ca", filepath.Join(e.certs, "ca.crt"),
			"--tls-cert", filepath.Join(e.certs, "node-client.crt"), "--tls-key", filepath.Join(e.certs, "node-client.key"),
			"--db-path", db, "--db-dir", filepath.Join(ndir, "vulndb"), "--kubeconfig", e.cl.Kubeconfig, "--resend", "1s")
		must(t, err)
		e.cl.Procs = append(e.cl.Procs, p)
		defer p.Stop()
		metrics[n.name] = "http://" + addrs[0] + "/metrics"
	}

	c := e.constraint(t, "moat-node-vulnerabilities")
	// The provider's own policy (critical=0 here) rejects the node; the
	// message names the pool, the CVE with its package and fixed version, and
	// begins the remediation (Gatekeeper cuts long messages in the status; the
	// suite checks the whole command).
	want := []string{
		"node pool user (node aks-user-0): ",
		testenv.HostCVE + " (critical, bash " + bash + ", fixed in " + bash + "+moat1)",
		"remediation: upgrade the node pool's node",
	}
	var last []string
	err := cluster.Poll(ctx, 120*time.Second, func() error {
		got, err := e.apply.Get(ctx, c)
		if err != nil {
			return err
		}
		vs, _, _ := unstructured.NestedSlice(got.Object, "status", "violations")
		last = last[:0]
		found := false
		for _, v := range vs {
			m, _ := v.(map[string]any)
			msg, _ := m["message"].(string)
			last = append(last, msg)
			if m["name"] == clean.name {
				return fmt.Errorf("the clean node is listed: %s", msg)
			}
			if m["name"] == vulnerable.name && strings.HasPrefix(msg, want[0]) && strings.Contains(msg, want[1]) && strings.Contains(msg, want[2]) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("the audit does not list %s yet", vulnerable.name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v; the audit listed: %q", err, last)
	}

	// Each node scanner read its pool from its Node: the findings metric is by pool.
	for name, line := range map[string]string{
		vulnerable.name: `moat_node_findings{pool="user",severity="critical"} 1`,
		clean.name:      `moat_node_findings{pool="system",severity="critical"} 0`,
	} {
		resp, err := http.Get(metrics[name])
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), line) {
			t.Errorf("%s's node scanner does not export %s", name, line)
		}
	}
}
