package config

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func commands() map[string]*rules {
	return map[string]*rules{
		"serve":   &ServeDefaults().r,
		"scanner": &NewScanner(flag.NewFlagSet("moat scanner", flag.ContinueOnError)).r,
	}
}

// Every duration and count has a rule, and 0 is either refused with a
// message naming the flag or documented in its help: no 0 silently means
// "forever" or "unlimited".
func TestEveryDurationAndCountSaysWhat0Means(t *testing.T) {
	for cmd, r := range commands() {
		r.fs.VisitAll(func(f *flag.Flag) {
			g, ok := f.Value.(flag.Getter)
			if !ok {
				return
			}
			switch g.Get().(type) {
			case time.Duration, int, int64:
			default:
				return
			}
			if !r.ruled[f.Name] {
				t.Errorf("%s --%s has no rule", cmd, f.Name)
				return
			}
			old := f.Value.String()
			if err := f.Value.Set("0"); err != nil {
				t.Fatal(err)
			}
			err := r.validate()
			documented := strings.Contains(f.Usage, "; 0: ")
			switch {
			case err == nil && !documented:
				t.Errorf("%s --%s 0 is accepted but its help does not say what 0 means", cmd, f.Name)
			case err != nil && documented:
				t.Errorf("%s --%s 0 is refused (%v) but its help says what 0 means", cmd, f.Name, err)
			case err != nil && !strings.Contains(err.Error(), "--"+f.Name+" 0: must be positive"):
				t.Errorf("%s --%s 0: %v, want a message naming the flag", cmd, f.Name, err)
			}
			if err := f.Value.Set("-1"); err == nil {
				if err := r.validate(); err == nil || !strings.Contains(err.Error(), "--"+f.Name+" -1") {
					t.Errorf("%s --%s -1: %v", cmd, f.Name, err)
				}
			}
			_ = f.Value.Set(old)
		})
		if err := r.validate(); err != nil {
			t.Errorf("%s defaults: %v", cmd, err)
		}
	}
}

func TestConfigFileKeysAreFlagNames(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := dir + "/c.yaml"
		if err := writeFile(p, body); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fs := flag.NewFlagSet("moat serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := NewServe(fs)
	if err := fs.Parse([]string{"--config", write("tls-cert: a\ntls-key: b\nclient-ca: c\ndigest-ttl: 1m\nscan-max: {critical: 0, High: 2}\ninsecure-registries: [r1:5000, r2:5000]\nmax-keys: 10\n" +
		"signature-identity: [\"issuer=https://a,subject-regexp=^x,y$\", \"issuer=https://b,subject=c\"]\n"), "--max-keys", "20"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if s.DigestTTL != time.Minute || s.MaxKeys != 20 || len(s.Registry.Insecure) != 2 || s.ScanMax["high"] != 2 || len(s.ScanMax) != 2 ||
		len(s.SignatureIdentities) != 2 || s.SignatureIdentities[0].SubjectRegExp != "^x,y$" || s.SignatureIdentities[1].Subject != "c" {
		t.Errorf("digest-ttl %v, max-keys %d (the command line wins), insecure %v", s.DigestTTL, s.MaxKeys, s.Registry.Insecure)
	}
	for body, says := range map[string]string{
		"tls-cert: a\ntls-key: b\nclient-ca: c\ndigest-tll: 1m\n": `unknown setting "digest-tll"`,
		"tls-cert: a\ntls-key: b\nclient-ca: c\nerror-ttl: 0s\n":  "--error-ttl 0: must be positive",
		"tls-cert: a\ntls-key: b\nclient-ca: c\ncache-size: x\n":  "cache-size",
		"tls-cert: a\ntls-key: b\nclient-ca: c\nscan-max: {}\n":   "scan-max: empty: name the limits",
	} {
		fs := flag.NewFlagSet("moat serve", flag.ContinueOnError)
		s := NewServe(fs)
		_ = fs.Parse([]string{"--config", write(body)})
		if err := s.Load(); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: %v, want %q", body, err, says)
		}
	}
}

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o600) }
