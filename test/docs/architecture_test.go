package docs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moat-dev/moat/test/pack"
)

const module = "github.com/moat-dev/moat/"

var row = regexp.MustCompile("^\\| `([a-z0-9/_-]+)` \\| ([0-9]+) \\|")

// docs/architecture.md names every package of the module and its layer; a
// package imports only packages of its own layer or lower ones.
func TestArchitectureNamesEveryPackageAndNoImportGoesUp(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(pack.Root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	layer := map[string]int{}
	for _, l := range strings.Split(string(raw), "\n") {
		if m := row.FindStringSubmatch(l); m != nil {
			layer[m[1]], _ = strconv.Atoi(m[2])
		}
	}
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = pack.Root
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		pkg := strings.TrimPrefix(f[0], module)
		listed = append(listed, pkg)
		lp, ok := layer[pkg]
		if !ok {
			t.Errorf("%s is not in docs/architecture.md", pkg)
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if ld, known := layer[dep]; known && ld > lp {
				t.Errorf("%s (layer %d) imports %s (layer %d): an import upward", pkg, lp, dep, ld)
			}
		}
	}
	for pkg := range layer {
		if !slices.Contains(listed, pkg) {
			t.Errorf("docs/architecture.md names %s, which go list does not", pkg)
		}
	}
}
