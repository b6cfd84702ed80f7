package reference

import (
	"errors"
	"strings"
	"testing"
)

var dig = "sha256:" + strings.Repeat("0123456789abcdef", 4)

func TestParseNormalises(t *testing.T) {
	cases := []struct {
		key, want, registry string
		pinned              bool
	}{
		{"nginx", "docker.io/library/nginx:latest", "index.docker.io", false},
		{"nginx:1.27", "docker.io/library/nginx:1.27", "index.docker.io", false},
		{"library/nginx:1.27", "docker.io/library/nginx:1.27", "index.docker.io", false},
		{"docker.io/nginx:1.27", "docker.io/library/nginx:1.27", "index.docker.io", false},
		{"index.docker.io/library/nginx", "docker.io/library/nginx:latest", "index.docker.io", false},
		{"bitnami/redis:7", "docker.io/bitnami/redis:7", "index.docker.io", false},
		{"ghcr.io/org/app:v1", "ghcr.io/org/app:v1", "ghcr.io", false},
		{"localhost:5000/app", "localhost:5000/app:latest", "localhost:5000", false},
		{"127.0.0.1:5001/a/b/c:1.0-rc.1", "127.0.0.1:5001/a/b/c:1.0-rc.1", "127.0.0.1:5001", false},
		{"nginx@" + dig, "docker.io/library/nginx@" + dig, "index.docker.io", true},
		{"nginx:1.27@" + dig, "docker.io/library/nginx:1.27@" + dig, "index.docker.io", true},
		{"myregistry.io:443/team/app:v2@" + dig, "myregistry.io:443/team/app:v2@" + dig, "myregistry.io:443", true},
	}
	for _, c := range cases {
		r, err := Parse(c.key)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.key, err)
			continue
		}
		if r.String() != c.want || r.Registry != c.registry || r.IsPinned() != c.pinned {
			t.Errorf("Parse(%q) = %q (registry %q, pinned %v), want %q (%q, %v)", c.key, r.String(), r.Registry, r.IsPinned(), c.want, c.registry, c.pinned)
		}
	}
}

func TestPinnedKeepsTheTag(t *testing.T) {
	r, err := Parse("nginx:1.27")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Pinned(dig); got != "docker.io/library/nginx:1.27@"+dig {
		t.Errorf("Pinned = %q", got)
	}
	if got := r.NameRef().String(); got != "index.docker.io/library/nginx:1.27" {
		t.Errorf("NameRef = %q", got)
	}
}

func TestParseRefusesWithAReason(t *testing.T) {
	cases := map[string]string{
		"":                                  "empty",
		"NGINX":                             "repository can only contain",
		"nginx:":                            "",
		"nginx:1 ":                          "character ' '",
		"nginx\t":                           "character '\\t'",
		"ngïnx":                             "character 'ï'",
		"nginx@sha256:abc":                  "digest",
		"nginx@" + dig + "@" + dig:          "more than one '@'",
		"nginx:" + strings.Repeat("x", 200): "tag",
		strings.Repeat("a/", 600):           "limit is 1024",
		"\xff\xfe":                          "UTF-8",
		"https://ghcr.io/app":               "",
	}
	for key, says := range cases {
		_, err := Parse(key)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", key)
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), says) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid saying %q", key, err, says)
		}
	}
}

// FuzzParse: no input panics; whatever parses has a canonical form that
// parses to itself (so two spellings of one image agree).
func FuzzParse(f *testing.F) {
	for _, s := range []string{"nginx", "nginx:1.27", "ghcr.io/a/b:c", "localhost:5000/x@" + dig, "a@b@c", "docker.io/library/x:y@" + dig, ":", "@", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		r, err := Parse(key)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrInvalid", key, err)
			}
			return
		}
		again, err := Parse(r.String())
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", r.String(), key, err)
		}
		if again.String() != r.String() {
			t.Fatalf("canonical form not stable: %q -> %q -> %q", key, r.String(), again.String())
		}
		if r.Tag == "" && r.Digest == "" {
			t.Fatalf("%q parsed with neither tag nor digest", key)
		}
	})
}
