package chart_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/moat-dev/moat/test/e2e/cluster"
)

// finalStage is what a Dockerfile's last stage sets: the instructions the
// image's configuration comes from.
type finalStage struct {
	User       string
	Entrypoint []string
	Cmd        []string
	Ports      []string
	Labels     map[string]string
	Copies     []string // COPY destinations
}

// parseDockerfile reads the last stage of a Dockerfile: continuation
// lines joined, comments skipped, exec-form ENTRYPOINT and CMD.
func parseDockerfile(t *testing.T, path string) finalStage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	cur := ""
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") || (l == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	var st finalStage
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			st = finalStage{Labels: map[string]string{}}
		case "USER":
			st.User = rest
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				t.Fatalf("%s %s: not the exec form: %v", instr, rest, err)
			}
			if strings.ToUpper(instr) == "CMD" {
				st.Cmd = v
			} else {
				st.Entrypoint = v
			}
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				st.Ports = append(st.Ports, p)
			}
		case "LABEL":
			for _, kv := range splitQuoted(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("LABEL %q: want key=value", kv)
				}
				st.Labels[k] = strings.Trim(v, `"`)
			}
		case "COPY":
			f := strings.Fields(rest)
			st.Copies = append(st.Copies, f[len(f)-1])
		}
	}
	return st
}

// splitQuoted splits on spaces outside double quotes.
func splitQuoted(s string) []string {
	var out []string
	var b strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			b.WriteRune(r)
		case r == ' ' && !quoted:
			if b.Len() > 0 {
				out = append(out, b.String())
				b.Reset()
			}
		default:
			b.WriteRune(r)
		}
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// The node tests run Moat from an image built without Docker; users run
// the Dockerfile's. Both must promise the same: entrypoint, command, user,
// ports, labels, and the binary where the entrypoint expects it.
func TestTheImageBuildMatchesTheDockerfile(t *testing.T) {
	docker := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	bin := filepath.Join(t.TempDir(), "moat")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := cluster.MoatImage(bin).Build()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	built := finalStage{User: cf.Config.User, Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Labels: cf.Config.Labels}
	for p := range cf.Config.ExposedPorts {
		built.Ports = append(built.Ports, p)
	}
	sort.Strings(built.Ports)
	sort.Strings(docker.Ports)
	if docker.User == "" || !reflect.DeepEqual(built.User, docker.User) {
		t.Errorf("user: built %q, Dockerfile %q", built.User, docker.User)
	}
	if !reflect.DeepEqual(built.Entrypoint, docker.Entrypoint) {
		t.Errorf("entrypoint: built %q, Dockerfile %q", built.Entrypoint, docker.Entrypoint)
	}
	if !reflect.DeepEqual(built.Cmd, docker.Cmd) {
		t.Errorf("cmd: built %q, Dockerfile %q", built.Cmd, docker.Cmd)
	}
	if !reflect.DeepEqual(built.Ports, docker.Ports) {
		t.Errorf("ports: built %q, Dockerfile %q", built.Ports, docker.Ports)
	}
	if len(docker.Labels) == 0 || !reflect.DeepEqual(built.Labels, docker.Labels) {
		t.Errorf("labels: built %v, Dockerfile %v", built.Labels, docker.Labels)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	// The binary is where the entrypoint runs it from, in both.
	if len(docker.Copies) != 1 || docker.Copies[0] != docker.Entrypoint[0] {
		t.Errorf("the Dockerfile's final stage copies %v; want only the entrypoint %s", docker.Copies, docker.Entrypoint[0])
	}
	if _, err := cluster.ImageFile(img, strings.TrimPrefix(built.Entrypoint[0], "/")); err != nil {
		t.Errorf("the built image: %v", err)
	}
}
