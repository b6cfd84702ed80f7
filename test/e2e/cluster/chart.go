package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// RenderChart renders charts/moat of the repository at root as release
// "moat" in namespace "moat" for kubeVersion with values (YAML, written to
// dir), with the helm pinned in tools/helm, and decodes the objects.
func RenderChart(root, dir, kubeVersion, values string) ([]*unstructured.Unstructured, error) {
	valuesFile := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesFile, []byte(values), 0o600); err != nil {
		return nil, err
	}
	helm := exec.Command("go", "tool", "-modfile=tools/helm/go.mod", "helm", "template", "moat", "charts/moat",
		"-n", "moat", "--kube-version", strings.TrimPrefix(kubeVersion, "v"), "-f", valuesFile)
	helm.Dir = root
	helm.Stderr = os.Stderr
	rendered, err := helm.Output()
	if err != nil {
		return nil, fmt.Errorf("helm template charts/moat: %w", err)
	}
	return Decode(rendered)
}

// ProviderPath is the endpoint of moat serve that the chart's Provider p
// calls: the chart names them <release>, <release>-mutate, <release>-nodes.
func ProviderPath(p *unstructured.Unstructured) string {
	switch {
	case strings.HasSuffix(p.GetName(), "-mutate"):
		return "/mutate"
	case strings.HasSuffix(p.GetName(), "-nodes"):
		return "/nodes"
	}
	return "/validate"
}
