package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moat-dev/moat/provider/internal/certs"
)

// Redis is a real redis-server (Debian's, installed by `make deps`) on a
// free loopback port, with a password, stopped by PID when the test ends.
type Redis struct {
	// URL is redis://127.0.0.1:port; PasswordFile and MACKeyFile are the
	// files `moat serve --redis-*` reads.
	URL, PasswordFile, MACKeyFile string
	Addr                          string
	// CertDir holds ca.crt, client.crt and client.key of a TLS server.
	CertDir  string
	tls      *tls.Config
	password string
	dir      string
	extra    []string
	cmd      *exec.Cmd
	done     chan struct{}
	tb       testing.TB
}

// StartRedis starts a redis-server with extra arguments (say
// "--maxmemory", "2mb"); it keeps nothing on disk.
func StartRedis(tb testing.TB, extra ...string) *Redis {
	tb.Helper()
	return startRedis(tb, false, extra)
}

// StartRedisTLS starts a redis-server that speaks TLS only and asks for a
// client certificate (rediss://); CertDir holds what a client needs.
func StartRedisTLS(tb testing.TB) *Redis {
	tb.Helper()
	return startRedis(tb, true, nil)
}

func startRedis(tb testing.TB, useTLS bool, extra []string) *Redis {
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redis-server is not installed: run `make deps` (hack/deps.sh): %v", err)
	}
	dir := tb.TempDir()
	r := &Redis{dir: dir, extra: extra, tb: tb, password: "moat-test-password",
		PasswordFile: filepath.Join(dir, "password"), MACKeyFile: filepath.Join(dir, "mac-key")}
	if err := os.WriteFile(r.PasswordFile, []byte(r.password+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(r.MACKeyFile, []byte("a test MAC key of thirty-two bytes or more\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r.Addr = ln.Addr().String()
	ln.Close()
	r.URL = "redis://" + r.Addr
	if useTLS {
		set, err := certs.NewDevSet(nil, time.Hour)
		if err != nil {
			tb.Fatal(err)
		}
		r.CertDir = filepath.Join(dir, "certs")
		if err := set.Write(r.CertDir); err != nil {
			tb.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(filepath.Join(r.CertDir, "client.crt"), filepath.Join(r.CertDir, "client.key"))
		if err != nil {
			tb.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(set.CA.CertPEM())
		r.tls = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		r.URL = "rediss://" + r.Addr
	}
	r.Start()
	tb.Cleanup(r.Kill)
	return r
}

// Start starts the server (again), with an empty data set.
func (r *Redis) Start() {
	r.tb.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	args := []string{"--bind", "127.0.0.1", "--port", port, "--requirepass", r.password,
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--protected-mode", "yes"}
	if r.tls != nil {
		args = append(args, "--port", "0", "--tls-port", port, "--tls-auth-clients", "yes",
			"--tls-cert-file", filepath.Join(r.CertDir, "tls.crt"), "--tls-key-file", filepath.Join(r.CertDir, "tls.key"),
			"--tls-ca-cert-file", filepath.Join(r.CertDir, "ca.crt"))
	}
	args = append(args, r.extra...)
	cmd := exec.Command("redis-server", args...)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		r.tb.Fatal(err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(r.done) }()
	c := r.Client()
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.tb.Fatalf("redis-server did not start: %v\n%s", err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL and waits for it.
func (r *Redis) Kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once continued
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Pause stops the server with SIGSTOP: connections stay open, nothing
// answers. Resume continues it.
func (r *Redis) Pause()  { r.signal(syscall.SIGSTOP) }
func (r *Redis) Resume() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(s syscall.Signal) {
	if r.cmd == nil {
		r.tb.Fatal("redis-server is not running")
	}
	if err := r.cmd.Process.Signal(s); err != nil {
		r.tb.Fatal(err)
	}
}

// Client is a client of the server, for a test to read and write keys.
func (r *Redis) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr, Password: r.password, MaxRetries: -1, TLSConfig: r.tls})
}

// Args are the `moat serve` flags that use this server.
func (r *Redis) Args(prefix string) []string {
	return []string{"--redis-url", r.URL, "--redis-password-file", r.PasswordFile,
		"--redis-mac-key-file", r.MACKeyFile, "--redis-prefix", prefix}
}
