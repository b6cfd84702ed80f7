package templates_test

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/moat-dev/moat/test/pack"
)

// psa is Pod Security Admission at its newest release, tools/psa, run as
// one process that answers a request per line.
type psa struct {
	mu  sync.Mutex
	in  io.Writer
	out *bufio.Scanner
}

type psaVerdict struct {
	Allowed  bool     `json:"allowed"`
	Reasons  []string `json:"reasons"`
	Error    string   `json:"error"`
	Versions []string `json:"versions"`
}

var psaProcess = sync.OnceValues(func() (*psa, error) {
	dir, err := os.MkdirTemp("", "moat-psa")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "psa")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(pack.Root, "tools", "psa")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, &exec.ExitError{Stderr: out}
	}
	cmd := exec.Command(bin)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	return &psa{in: in, out: sc}, nil
})

// newPSA gives the shared process; the process ends with the test binary.
func newPSA(t *testing.T) *psa {
	t.Helper()
	p, err := psaProcess()
	if err != nil {
		t.Fatalf("tools/psa: %v", err)
	}
	return p
}

func (p *psa) ask(t *testing.T, req map[string]any) psaVerdict {
	t.Helper()
	line, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.in.Write(append(line, '\n')); err != nil {
		t.Fatal(err)
	}
	if !p.out.Scan() {
		t.Fatalf("tools/psa stopped: %v", p.out.Err())
	}
	var v psaVerdict
	if err := json.Unmarshal(p.out.Bytes(), &v); err != nil || v.Error != "" {
		t.Fatalf("tools/psa: %v %s", err, v.Error)
	}
	return v
}

// allowsAt is the policy's verdict on a pod at level and version.
func (p *psa) allowsAt(t *testing.T, level, version string, pod map[string]any) (bool, []string) {
	v := p.ask(t, map[string]any{"level": level, "version": version, "pod": pod})
	return v.Allowed, v.Reasons
}

// versions are those at which one of the policy's checks begins or changes.
func (p *psa) versions(t *testing.T) []string {
	v := p.ask(t, map[string]any{"versions": true})
	if len(v.Versions) == 0 {
		t.Fatal("tools/psa listed no versions")
	}
	return v.Versions
}

// admitsUpdate is the admission code's verdict on an UPDATE, enforcing
// level at the newest version.
func (p *psa) admitsUpdate(t *testing.T, level string, u podUpdate) (bool, []string) {
	v := p.ask(t, map[string]any{"level": level, "version": "latest", "old": u.old, "new": u.new, "subresource": u.subresource})
	return v.Allowed, v.Reasons
}
