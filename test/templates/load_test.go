package templates_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/gatekeeper/v3/apis"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator/reader"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

const root = "../.."

// newClient is a client as gator builds it: CEL first (as Gatekeeper runs
// templates that carry both engines) or Rego only.
func newClient(tb testing.TB, cel bool) gator.Client {
	tb.Helper()
	var opts []gator.Opt
	if cel {
		opts = append(opts, gator.WithK8sCEL())
	}
	c, err := gator.NewOPAClient(false, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// usesExternalData reports whether a template calls external_data: gator's
// client cannot load those (moat verify runs their suites).
func usesExternalData(tb testing.TB, path string) bool {
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Contains(string(raw), "external_data(")
}

// addTemplates adds every shipped template (templates/*.yaml) that gator
// can load, read as gator reads them.
func addTemplates(tb testing.TB, c gator.Client) {
	tb.Helper()
	scheme := runtime.NewScheme()
	if err := apis.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "templates", "*.yaml"))
	if len(files) == 0 {
		tb.Fatal("no templates")
	}
	for _, f := range files {
		if usesExternalData(tb, f) {
			continue
		}
		tmpl, err := reader.ReadTemplate(scheme, os.DirFS("/"), strings.TrimPrefix(mustAbs(tb, f), "/"))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		if _, err := c.AddTemplate(context.Background(), tmpl); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
	}
}

// readConstraint reads one constraint file.
func readConstraint(tb testing.TB, path string) *unstructured.Unstructured {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	u, err := reader.ReadUnstructured(raw)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return u
}

// addConstraint adds u, failing the test on error.
func addConstraint(tb testing.TB, c gator.Client, u *unstructured.Unstructured) {
	tb.Helper()
	if _, err := c.AddConstraint(context.Background(), u); err != nil {
		tb.Fatalf("constraint %s: %v", u.GetName(), err)
	}
}

// addConstraintDirs adds every constraint in the given directories under
// constraints/, in order (a later file of the same kind and name replaces
// an earlier one) and returns how many files there were.
func addConstraintDirs(tb testing.TB, c gator.Client, dirs ...string) int {
	tb.Helper()
	n := 0
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(root, "constraints", d, "*.yaml"))
		for _, f := range files {
			addConstraint(tb, c, readConstraint(tb, f))
			n++
		}
	}
	return n
}

func mustAbs(tb testing.TB, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}
