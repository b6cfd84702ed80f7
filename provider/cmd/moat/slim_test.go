package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The image's build (-tags moat_slim) has no development command and links
// none of their packages.
func TestSlimBuildHoldsOnlyWhatRunsInACluster(t *testing.T) {
	deps, err := exec.Command("go", "list", "-deps", "-tags", "moat_slim", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"moat/provider/internal/verify\n", "moat/provider/internal/devregistry\n", "moat/provider/internal/samples\n", "open-policy-agent/frameworks/"} {
		if strings.Contains(string(deps), pkg) {
			t.Errorf("the slim build links %s", pkg)
		}
	}
	bin := filepath.Join(t.TempDir(), "moat")
	if out, err := exec.Command("go", "build", "-tags", "moat_slim", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for name := range devCommands {
		out, err := exec.Command(bin, name).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not in this build") {
			t.Errorf("slim moat %s: %v %s", name, err, out)
		}
	}
	usage, _ := exec.Command(bin).CombinedOutput()
	for name := range devCommands {
		if strings.Contains(string(usage), "  "+name+" ") {
			t.Errorf("the slim build lists %s", name)
		}
	}
	if !strings.Contains(string(usage), "  serve ") {
		t.Errorf("usage without serve: %s", usage)
	}
}
