package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-dev/moat/provider/internal/samples"
)

// HostCVE is the made-up advisory HostRoot's database holds for the
// machine's installed bash.
const HostCVE = "MOAT-NODE-0001"

// HostRoot lays out, under dir, what a node scanner reads of a node's /:
// this machine's own Debian os-release (through Debian's relative link) and
// dpkg database, copied. With clean, the dpkg database lists no package.
// It returns the root and the installed bash version.
func HostRoot(tb testing.TB, dir string, clean bool) (root, bash string) {
	tb.Helper()
	root = filepath.Join(dir, "root")
	status, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		tb.Fatalf("node scans are tested on this machine's Debian packages: %v", err)
	}
	osRelease, err := os.ReadFile("/usr/lib/os-release")
	if err != nil {
		tb.Fatal(err)
	}
	bash = packageVersion(string(status), "bash")
	if clean {
		status = nil
	}
	for path, body := range map[string][]byte{"usr/lib/os-release": osRelease, "var/lib/dpkg/status": status} {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink("../usr/lib/os-release", filepath.Join(root, "etc/os-release")); err != nil {
		tb.Fatal(err)
	}
	return root, bash
}

// WriteHostDB writes to path a database holding HostCVE: this machine's
// installed bash is critical, fixed in the next version.
func WriteHostDB(tb testing.TB, path string) (bash string) {
	tb.Helper()
	status, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		tb.Fatal(err)
	}
	osRelease, err := os.ReadFile("/usr/lib/os-release")
	if err != nil {
		tb.Fatal(err)
	}
	f := map[string]string{}
	for _, l := range strings.Split(string(osRelease), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			f[k] = strings.Trim(v, `"`)
		}
	}
	bash = packageVersion(string(status), "bash")
	if bash == "" {
		tb.Fatal("this machine's Debian has no bash installed")
	}
	if err := samples.WriteDBOf(path, []samples.Vuln{{ID: HostCVE, Package: "bash", Fixed: bash + "+moat1", Severity: "critical",
		Distro: f["ID"] + ":" + f["VERSION_ID"] + ":" + f["VERSION_CODENAME"]}}); err != nil {
		tb.Fatal(err)
	}
	return bash
}

// packageVersion is the installed version of pkg in a dpkg status file.
func packageVersion(status, pkg string) string {
	for _, para := range strings.Split(status, "\n\n") {
		if !strings.HasPrefix(para, "Package: "+pkg+"\n") || !strings.Contains(para, "Status: install ok installed") {
			continue
		}
		for _, l := range strings.Split(para, "\n") {
			if v, ok := strings.CutPrefix(l, "Version: "); ok {
				return v
			}
		}
	}
	return ""
}
