//go:build !moat_slim

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-dev/moat/provider/testenv"
)

func repoPath(t *testing.T, p string) string {
	abs, err := filepath.Abs(filepath.Join("..", "..", "..", p))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func runMoat(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(moatBin, args...)
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

// A suite whose case is wrong fails the run (exit 1) with gator's report.
func TestVerifyFailsOnAFailingCase(t *testing.T) {
	dir := t.TempDir()
	src := repoPath(t, "gator-suites/moatimagedigest")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(dir, repoPath(t, "templates"))
		if err != nil {
			t.Fatal(err)
		}
		// gator reads a suite's paths relative to the suite, absolute or not.
		s := strings.ReplaceAll(string(b), "../../templates/", rel+"/")
		if e.Name() == "suite.yaml" { // claim the stale pod is fine: must fail
			s = strings.Replace(s, "{name: stale-digest-denied, object: stale.yaml, assertions: [{violations: 1,", "{name: stale-digest-denied, object: stale.yaml, assertions: [{violations: 0,", 1)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, code := runMoat(t, "verify", dir)
	if code != 1 || !strings.Contains(out, "--- FAIL: stale-digest-denied") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	if out, code := runMoat(t, "verify", repoPath(t, "gator-suites/moatimagedigest")); code != 0 {
		t.Fatalf("the shipped suite: exit %d\n%s", code, out)
	}
}

// With --provider-url, the templates ask a running Moat: here one resolving
// a tag in a real registry, so a stale pinned digest is caught for real.
func TestVerifyAgainstARunningProvider(t *testing.T) {
	env := testenv.Start(t, testenv.Defaults())
	ref, digest := env.Push(t, "verify/app:v1")
	stale := "sha256:" + strings.Repeat("0", 64)
	dir := t.TempDir()
	tmpl, err := filepath.Rel(dir, repoPath(t, "templates/moatimagedigest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"constraint.yaml": "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: MoatImageDigest\nmetadata: {name: current}\nspec:\n  match: {kinds: [{apiGroups: [\"\"], kinds: [Pod]}]}\n  parameters: {requireCurrentDigest: true}\n",
		"current.yaml":    fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: apps}\nspec: {containers: [{name: web, image: %q}]}\n", ref+"@"+digest),
		"stale.yaml":      fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: apps}\nspec: {containers: [{name: web, image: %q}]}\n", ref+"@"+stale),
		"suite.yaml": fmt.Sprintf(`apiVersion: test.gatekeeper.sh/v1alpha1
kind: Suite
metadata: {name: live}
tests:
- name: live
  template: %s
  constraint: constraint.yaml
  cases:
  - {name: current, object: current.yaml, assertions: [{violations: no}]}
  - {name: stale, object: stale.yaml, assertions: [{violations: 1, message: "is %s now"}]}
`, tmpl, digest),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, code := runMoat(t, "verify", "-v", "--provider-url", env.URL,
		"--ca", env.Path("ca.crt"), "--cert", env.Path("client.crt"), "--key", env.Path("client.key"), dir)
	if code != 0 || !strings.Contains(out, "PASS: stale") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}
