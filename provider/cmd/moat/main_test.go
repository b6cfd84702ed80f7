package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/testenv"
)

var moatBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "moat-cli")
	if err != nil {
		panic(err)
	}
	moatBin = filepath.Join(dir, "moat")
	if out, err := exec.Command("go", "build", "-o", moatBin, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestServeHelpDocumentsEveryFlagWithItsDefault(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--help"}, io.Discard, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	help := out.String()
	for _, name := range []string{"addr", "metrics-addr", "tls-cert", "tls-key", "client-ca", "config", "insecure-skip-client-verify",
		"max-request-bytes", "max-keys", "validate-deadline", "mutate-deadline", "cache-size", "digest-ttl", "error-ttl",
		"stale-while-revalidate", "resolve-timeout", "registry-concurrency", "registry-config", "insecure-registries",
		"cert-reload-interval", "shutdown-delay", "shutdown-timeout", "log-format", "log-level",
		"scanner", "scanner-url", "scan-workers", "scan-queue", "scan-timeout", "scan-wait", "report-ttl", "scan-failed-ttl",
		"scan-max", "scan-ignore-unfixed", "scan-ignore-ids", "scan-max-findings", "db-path", "db-url", "db-max-age", "db-update-interval"} {
		if !strings.Contains(help, "-"+name) {
			t.Errorf("serve --help does not document --%s", name)
		}
	}
	for _, def := range []string{`(default ":8443")`, "(default 2000)", "(default 1048576)", "(default 2s)", "(default 800ms)", "(default 5m0s)"} {
		if !strings.Contains(help, def) {
			t.Errorf("serve --help lacks %s", def)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		says string
	}{
		{[]string{"serve"}, 2, "--tls-cert, --tls-key and --client-ca are required"},
		{[]string{"serve", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"lookup"}, 2, "name at least one image reference"},
		{[]string{"lookup", "--key-errors", "ignore", "nginx"}, 2, `--key-errors "ignore": want fail or report`},
		{[]string{"dev-certs"}, 2, "--out is required"},
		{[]string{"scanner"}, 2, "--tls-cert, --tls-key and --client-ca are required"},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--scanner", "service"}, 2, "--scanner=service needs --scanner-url"},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--scanner", "remote"}, 2, `--scanner "remote": want off, embedded, service`},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--digest-ttl", "0s"}, 2, "--digest-ttl 0: must be positive"},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--db-max-age", "0"}, 2, "--db-max-age 0: must be positive"},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--scan-queue", "-1"}, 2, "--scan-queue -1: must not be negative"},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--log-level", "loud"}, 2, `--log-level "loud": want debug, info, warn, error`},
		{[]string{"scanner", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--workers", "0"}, 2, "--workers 0: must be positive"},
		{[]string{"scanner", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--scan-platform", "linux/arm64/v8/x"}, 2, `--scan-platform "linux/arm64/v8/x"`},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--scan-max", "severe=1"}, 2, `unknown severity "severe"`},
		{[]string{"serve", "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--scan-max", "high"}, 2, "want severity=count"},
	}
	for _, c := range cases {
		var errOut bytes.Buffer
		if code := run(context.Background(), c.args, io.Discard, &errOut); code != c.code || !strings.Contains(errOut.String(), c.says) {
			t.Errorf("moat %v: exit %d, stderr %q; want %d saying %q", c.args, code, errOut.String(), c.code, c.says)
		}
	}
}

// serveProc is a `moat serve` process.
type serveProc struct {
	cmd  *exec.Cmd
	url  string
	ops  string // http://host:port of /metrics
	logs *testenv.SyncBuffer
	done chan error
}

// startServe runs the real binary with dev certificates from certDir and
// waits until it logs its address.
func startServe(t *testing.T, certDir string, extra ...string) *serveProc {
	t.Helper()
	return startMoat(t, "serve", certDir, append([]string{"--addr", "127.0.0.1:0"}, extra...)...)
}

// startMoat runs `moat <command>` (serve or scanner) with the dev
// certificates; extra flags win over the defaults given here.
func startMoat(t *testing.T, command, certDir string, extra ...string) *serveProc {
	t.Helper()
	args := append([]string{command, "--metrics-addr", "127.0.0.1:0",
		"--tls-cert", filepath.Join(certDir, "tls.crt"), "--tls-key", filepath.Join(certDir, "tls.key"),
		"--client-ca", filepath.Join(certDir, "ca.crt")}, extra...)
	cmd := exec.Command(moatBin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &serveProc{cmd: cmd, logs: &testenv.SyncBuffer{}, done: make(chan error, 1)}
	addr := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			_, _ = s.logs.Write([]byte(line + "\n"))
			var rec struct {
				Msg, Addr string
				OpsAddr   string `json:"opsAddr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
				addr <- [2]string{rec.Addr, rec.OpsAddr}
			}
		}
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case a := <-addr:
		s.url, s.ops = "https://"+a[0], "http://"+a[1]
	case <-time.After(20 * time.Second):
		t.Fatalf("moat %s did not start: %s", command, s.logs)
	}
	return s
}

func devCerts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(moatBin, "dev-certs", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("dev-certs: %v: %s", err, out)
	}
	return dir
}

func certClient(t *testing.T, dir string) *http.Client {
	conf, err := client.TLSConfig(client.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "client.crt"), Key: filepath.Join(dir, "client.key")})
	if err != nil {
		t.Fatal(err)
	}
	return client.New(conf, 2, 20*time.Second)
}

func TestConfigFileSetsFlagsAndRefusesUnknownSettings(t *testing.T) {
	certDir := devCerts(t)
	cfg := filepath.Join(t.TempDir(), "moat.yaml")
	if err := os.WriteFile(cfg, []byte("max-keys: 1\nlog-level: debug\ninsecure-registries: [a:1, b:2]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, certDir, "--config", cfg)
	code, raw, err := client.Post(context.Background(), certClient(t, certDir), s.url+"/validate", client.Body([]string{"a", "b"}))
	if err != nil || code != 413 || !strings.Contains(string(raw), "the limit is 1") {
		t.Errorf("HTTP %d %s %v; want 413 from max-keys: 1 in the config file", code, raw, err)
	}

	if err := os.WriteFile(cfg, []byte("max-kyes: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(moatBin, "serve", "--config", cfg, "--tls-cert", "x", "--tls-key", "x", "--client-ca", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown setting "max-kyes"`) {
		t.Errorf("a misspelt setting: %v, %s", err, out)
	}
}

func TestSIGTERMFinishesInFlightRequests(t *testing.T) {
	reg := devregistry.New()
	rs := httptest.NewServer(reg)
	defer rs.Close()
	host := strings.TrimPrefix(rs.URL, "http://")
	digest, err := devregistry.Push(context.Background(), host+"/slow/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	reg.SetDelay(300 * time.Millisecond) // each registry round trip
	heads := reg.ManifestHeads()

	certDir := devCerts(t)
	s := startServe(t, certDir, "--insecure-registries", host, "--validate-deadline", "10s")
	type result struct {
		resp *client.Response
		err  error
	}
	res := make(chan result, 1)
	go func() {
		r, _, err := client.Lookup(context.Background(), certClient(t, certDir), s.url+"/validate", []string{host + "/slow/app:v1"})
		res <- result{r, err}
	}()
	// Signal once the request is being served (its resolution has started).
	deadline := time.Now().Add(10 * time.Second)
	for reg.ManifestHeads() < heads+1 {
		if time.Now().After(deadline) {
			t.Fatal("request never reached the registry")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("in-flight request failed on SIGTERM: %v\n%s", r.err, s.logs)
	}
	if it := r.resp.Response.Items[0]; it.Error != "" || !strings.Contains(string(it.Value), digest) {
		t.Errorf("in-flight answer %+v, want digest %s", it, digest)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("moat serve exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("moat serve did not exit after SIGTERM")
	}
	if !strings.Contains(s.logs.String(), "finishing in-flight requests") {
		t.Errorf("shutdown not logged:\n%s", s.logs)
	}
}

func TestLookupCommandExitCodes(t *testing.T) {
	certDir := devCerts(t)
	s := startServe(t, certDir)
	pinned := "nginx@sha256:" + strings.Repeat("0", 64)
	out, err := exec.Command(moatBin, "lookup", "--certs", certDir, "--url", s.url+"/mutate", pinned).CombinedOutput()
	if err != nil || !strings.Contains(string(out), pinned) {
		t.Errorf("lookup of a pinned key: %v %s", err, out)
	}
	cmd := exec.Command(moatBin, "lookup", "--certs", certDir, "--url", s.url+"/validate", "Bad Ref")
	out, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 3 || !strings.Contains(string(out), "invalid image reference") {
		t.Errorf("lookup of a bad key: exit %d, %s; want 3", cmd.ProcessState.ExitCode(), out)
	}
	// The helm test's check: an answer, even a key's error, is success.
	cmd = exec.Command(moatBin, "lookup", "--certs", certDir, "--url", s.url+"/validate", "--key-errors", "report", "Bad Ref")
	out, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 0 || !strings.Contains(string(out), "invalid image reference") {
		t.Errorf("lookup --key-errors report of a bad key: exit %d, %s; want 0 and the error printed", cmd.ProcessState.ExitCode(), out)
	}
	// No answer at all (nothing listens) still fails.
	cmd = exec.Command(moatBin, "lookup", "--certs", certDir, "--url", "https://127.0.0.1:1/validate", "--key-errors", "report", "nginx")
	if out, _ = cmd.CombinedOutput(); cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("lookup --key-errors report with no provider: exit 0, %s", out)
	}
}
