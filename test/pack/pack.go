// Package pack loads the shipped policy pack (templates and constraint files)
// into a gator client, as gator reads them, for the tests under test/.
package pack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/frameworks/constraint/pkg/core/templates"
	"github.com/open-policy-agent/gatekeeper/v3/apis"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/gator/reader"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Root is the repository Root, seen from a package under test/.
const Root = "../.."

// NewClient is a client as gator builds it: CEL first (as Gatekeeper runs
// templates that carry both engines) or Rego only.
func NewClient(tb testing.TB, cel bool) gator.Client {
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

// UsesExternalData reports whether a template calls external_data: gator's
// client cannot load those (moat verify runs their suites).
func UsesExternalData(tb testing.TB, path string) bool {
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Contains(string(raw), "external_data(")
}

// AddTemplates adds every shipped template (templates/*.yaml) that gator
// can load, read as gator reads them.
func AddTemplates(tb testing.TB, c gator.Client) {
	tb.Helper()
	scheme := runtime.NewScheme()
	if err := apis.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(Root, "templates", "*.yaml"))
	if len(files) == 0 {
		tb.Fatal("no templates")
	}
	for _, f := range files {
		if UsesExternalData(tb, f) {
			continue
		}
		tmpl, err := reader.ReadTemplate(scheme, os.DirFS("/"), strings.TrimPrefix(MustAbs(tb, f), "/"))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		if _, err := c.AddTemplate(context.Background(), tmpl); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
	}
}

// ReadConstraint reads one constraint file.
func ReadConstraint(tb testing.TB, path string) *unstructured.Unstructured {
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

// AddConstraint adds u, failing the test on error.
func AddConstraint(tb testing.TB, c gator.Client, u *unstructured.Unstructured) {
	tb.Helper()
	if _, err := c.AddConstraint(context.Background(), u); err != nil {
		tb.Fatalf("constraint %s: %v", u.GetName(), err)
	}
}

// AddConstraintDirs adds every constraint in the given directories under
// constraints/, in order (a later file of the same kind and name replaces
// an earlier one), each changed by adjust first when it is not nil.
func AddConstraintDirs(tb testing.TB, c gator.Client, adjust func(*unstructured.Unstructured), dirs ...string) {
	tb.Helper()
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(Root, "constraints", d, "*.yaml"))
		for _, f := range files {
			u := ReadConstraint(tb, f)
			if adjust != nil {
				adjust(u)
			}
			AddConstraint(tb, c, u)
		}
	}
}

func MustAbs(tb testing.TB, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// ReadTemplate reads one template file as gator reads it.
func ReadTemplate(tb testing.TB, path string) *templates.ConstraintTemplate {
	tb.Helper()
	scheme := runtime.NewScheme()
	if err := apis.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	tmpl, err := reader.ReadTemplate(scheme, os.DirFS("/"), strings.TrimPrefix(MustAbs(tb, path), "/"))
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return tmpl
}
