//go:build !moat_slim

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/moat-dev/moat/provider/internal/certs"
	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/open-policy-agent/frameworks/constraint/pkg/externaldata"
)

// runBench measures `moat serve` as Gatekeeper uses it. The servers run as
// child processes, so their CPU time (from /proc) excludes the load
// generator sharing the machine's cores.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr, "[--duration D] [--clients N] [--batch N]")
	duration := fs.Duration("duration", 5*time.Second, "how long each cached-lookup run lasts")
	clients := fs.Int("clients", 4, "concurrent client connections (keep-alive, HTTP/1.1)")
	batch := fs.Int("batch", 100, "keys per request")
	coldTags := fs.Int("cold-tags", 100, "distinct tags in the cold-lookup run")
	coldDelay := fs.Duration("cold-delay", 50*time.Millisecond, "latency the registry adds to every request in the cold run")
	shared := fs.Bool("shared", true, "also measure with the shared tier: a redis-server (make deps) on loopback")
	serveBinary := fs.String("serve-binary", "", "run the moat serve of this binary instead of this one's: another build's figures in the same run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if runtime.GOOS != "linux" {
		return errors.New("moat bench reads server CPU time from /proc: Linux only")
	}
	work, err := os.MkdirTemp("", "moat-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	set, err := certs.NewDevSet(nil, time.Hour)
	if err != nil {
		return err
	}
	if err := set.Write(work); err != nil {
		return err
	}

	reg := devregistry.New()
	regLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	regSrv := &http.Server{Handler: reg, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = regSrv.Serve(regLn) }()
	defer regSrv.Close()
	host := regLn.Addr().String()

	keys := make([]string, *batch)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s/bench/app:v%d", host, i)
		if _, err := devregistry.Push(ctx, keys[i]); err != nil {
			return err
		}
	}
	cold := make([]string, *coldTags)
	for i := range cold {
		cold[i] = fmt.Sprintf("%s/cold/app:t%d", host, i)
		if _, err := devregistry.Push(ctx, cold[i]); err != nil {
			return err
		}
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	conf, err := client.TLSConfig(client.Files{CA: filepath.Join(work, "ca.crt"), Cert: filepath.Join(work, "client.crt"), Key: filepath.Join(work, "client.key")})
	if err != nil {
		return err
	}

	server := self
	if *serveBinary != "" {
		server = *serveBinary
	}
	provider, err := startChild(server, "serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
		"--tls-cert", filepath.Join(work, "tls.crt"), "--tls-key", filepath.Join(work, "tls.key"),
		"--client-ca", filepath.Join(work, "ca.crt"), "--insecure-registries", host, "--log-level", "info")
	if err != nil {
		return err
	}
	defer provider.stop()

	// Fill the cache.
	warm := client.New(conf, 1, 30*time.Second)
	code, body, err := client.Post(ctx, warm, provider.url+"/validate", client.Body(keys))
	if err != nil || code != 200 {
		return fmt.Errorf("warm-up: HTTP %d: %v", code, err)
	}
	if n := strings.Count(string(body), `"error"`); n > 0 {
		return fmt.Errorf("warm-up: %d keys failed: %s", n, body)
	}
	fmt.Fprintf(stdout, "One cached answer as Moat sends it (%d bytes per item on average):\n  %s\n",
		(len(body)-len(`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderResponse","response":{"idempotent":true,"items":[]}}`))/len(keys), firstItem(body))
	baseline, err := startChild(self, "bench-baseline-server", "--addr", "127.0.0.1:0", "--certs", work)
	if err != nil {
		return err
	}
	defer baseline.stop()

	fmt.Fprintf(stdout, "Cached lookups: %d keys per request, %d clients, %s each, mutual TLS 1.3, HTTP/1.1 keep-alive, %d CPUs;\n"+
		"each response read whole and decoded into the frameworks' ProviderResponse, as Gatekeeper's client does\n",
		*batch, *clients, *duration, runtime.NumCPU())
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	servers := []*child{provider, baseline}
	var withShared *child
	var rs *redisChild
	if *shared {
		if rs, err = startRedisChild(work); err != nil {
			return err
		}
		defer rs.stop()
		if withShared, err = startChild(server, append([]string{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
			"--tls-cert", filepath.Join(work, "tls.crt"), "--tls-key", filepath.Join(work, "tls.key"),
			"--client-ca", filepath.Join(work, "ca.crt"), "--insecure-registries", host, "--log-level", "info"}, rs.args...)...); err != nil {
			return err
		}
		defer withShared.stop()
		if code, _, err := client.Post(ctx, warm, withShared.url+"/validate", client.Body(keys)); err != nil || code != 200 {
			return fmt.Errorf("warm-up with the shared tier: HTTP %d: %v", code, err)
		}
		servers = append(servers, withShared)
	}
	fmt.Fprintln(tw, "server\tkeys/s\trequests\tp50\tp99\tserver CPU/key\tclient CPU/key\t")
	var results []loadResult
	for _, s := range servers {
		r, err := load(ctx, s, conf, client.Body(keys), *clients, *duration, len(keys))
		if err != nil {
			return err
		}
		results = append(results, r)
		name := "moat serve"
		switch s {
		case baseline:
			name = "minimal server (100 small items)"
		case withShared:
			name = "moat serve, shared tier configured"
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%s\t%s\t%.2f µs\t%.2f µs\t\n", name, r.keysPerSec, r.requests,
			r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.cpuPerKey.Seconds()*1e6, r.clientPerKey.Seconds()*1e6)
	}
	tw.Flush()
	moat, minimal := results[0], results[1]
	fmt.Fprintf(stdout, "moat server CPU per cached key: %.2f µs, %.2f× the minimal server's (targets: at most 2.0 µs and 1.00×)\n",
		moat.cpuPerKey.Seconds()*1e6, moat.cpuPerKey.Seconds()/minimal.cpuPerKey.Seconds())
	fmt.Fprintf(stdout, "client CPU per key decoding moat's answers: %.2f× the minimal server's (target: at most 1.5×)\n",
		moat.clientPerKey.Seconds()/minimal.clientPerKey.Seconds())
	fmt.Fprintf(stdout, "p99 difference, moat minus minimal: %s (target: within 1ms)\n", (moat.p99 - minimal.p99).Round(time.Microsecond))
	if _, minimalBody, err := client.Post(ctx, warm, baseline.url+"/validate", client.Body(keys)); err == nil {
		m, b := decodeCost(body), decodeCost(minimalBody)
		fmt.Fprintf(stdout, "decoding alone, in this process, no I/O: %.2f µs per key of moat's answers, %.2f of the minimal server's (%.2f×)\n",
			m.Seconds()*1e6/float64(len(keys)), b.Seconds()*1e6/float64(len(keys)), m.Seconds()/b.Seconds())
	}
	if withShared != nil {
		fmt.Fprintf(stdout, "with the shared tier configured: CPU per cached key %.2f µs, %.2f× without (target: within 1.10×)\n",
			results[2].cpuPerKey.Seconds()*1e6, results[2].cpuPerKey.Seconds()/results[0].cpuPerKey.Seconds())
		if err := benchSharedMiss(ctx, server, work, host, rs, conf, keys, stdout); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout)

	// Cold: a fresh cache, every tag resolved at a registry that adds delay.
	reg.SetDelay(*coldDelay)
	start := time.Now()
	coldClient := client.New(conf, 1, 30*time.Second)
	resp, _, err := client.Lookup(ctx, coldClient, provider.url+"/validate", cold)
	elapsed := time.Since(start)
	if err != nil {
		return err
	}
	failed := 0
	for _, it := range resp.Response.Items {
		if it.Error != "" {
			failed++
		}
	}
	fmt.Fprintf(stdout, "Cold lookups: %d distinct tags in one request, registry adds %s to every request, per-host limit 32: answered in %s, %d errors (target: under 400ms)\n",
		len(cold), *coldDelay, elapsed.Round(time.Millisecond), failed)
	if failed > 0 {
		return fmt.Errorf("%d cold keys failed", failed)
	}
	return nil
}

// benchSharedMiss starts a replica with an empty cache next to one that
// resolved keys: each key it is asked misses its own cache and is answered
// from the shared tier. One key per request, one at a time.
func benchSharedMiss(ctx context.Context, server, work, host string, rs *redisChild, conf *tls.Config, keys []string, stdout io.Writer) error {
	replica, err := startChild(server, append([]string{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
		"--tls-cert", filepath.Join(work, "tls.crt"), "--tls-key", filepath.Join(work, "tls.key"),
		"--client-ca", filepath.Join(work, "ca.crt"), "--insecure-registries", host, "--log-level", "info"}, rs.args...)...)
	if err != nil {
		return err
	}
	defer replica.stop()
	c := client.New(conf, 1, 30*time.Second)
	// A key of no interest first: the connection and the Redis pool are up.
	if _, _, err := client.Post(ctx, c, replica.url+"/validate", client.Body([]string{host + "/bench/warm-up:v0"})); err != nil {
		return err
	}
	cpu0, err := processCPU(replica.cmd.Process.Pid)
	if err != nil {
		return err
	}
	lat := make([]time.Duration, 0, len(keys))
	for _, k := range keys {
		start := time.Now()
		resp, _, err := client.Lookup(ctx, c, replica.url+"/validate", []string{k})
		if err != nil {
			return err
		}
		lat = append(lat, time.Since(start))
		if it := resp.Response.Items[0]; it.Error != "" {
			return fmt.Errorf("%s: %s", k, it.Error)
		}
	}
	cpu1, err := processCPU(replica.cmd.Process.Pid)
	if err != nil {
		return err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Fprintf(stdout, "first-tier misses answered from the shared tier: %d keys, one per request: p50 %s, p99 %s, server CPU per key %.1f µs\n",
		len(keys), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), (cpu1-cpu0).Seconds()*1e6/float64(len(keys)))
	return nil
}

// redisChild is a redis-server on loopback for the shared-tier runs.
type redisChild struct {
	cmd  *exec.Cmd
	args []string // the moat serve flags that use it
}

func (r *redisChild) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

func startRedisChild(work string) (*redisChild, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("--shared needs redis-server (make deps installs it), or --shared=false: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	pw, key := filepath.Join(work, "redis-password"), filepath.Join(work, "redis-mac-key")
	if err := os.WriteFile(pw, []byte("bench-password"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(key, []byte("a benchmark MAC key of thirty-two bytes or more"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--requirepass", "bench-password",
		"--save", "", "--appendonly", "no", "--dir", work)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &redisChild{cmd: cmd, args: []string{"--redis-url", "redis://" + addr, "--redis-password-file", pw, "--redis-mac-key-file", key}}
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return r, nil
		}
		if i == 200 {
			r.stop()
			return nil, fmt.Errorf("redis-server did not start: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type loadResult struct {
	requests     int
	keysPerSec   float64
	p50, p99     time.Duration
	cpuPerKey    time.Duration // the server's
	clientPerKey time.Duration // this process's: requests sent, responses read and decoded
}

// gatekeeperCall sends body and handles the answer as Gatekeeper's client
// does (frameworks' externaldata.DefaultSendRequestToProvider): the whole
// body read, then decoded into a ProviderResponse whose values are any.
func gatekeeperCall(ctx context.Context, hc *http.Client, url string, body []byte, keys int) error {
	code, raw, err := client.Post(ctx, hc, url, body)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", code, raw)
	}
	var resp externaldata.ProviderResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		return err
	}
	if resp.Response.SystemError != "" || len(resp.Response.Items) != keys {
		return fmt.Errorf("%d items for %d keys, system error %q", len(resp.Response.Items), keys, resp.Response.SystemError)
	}
	for _, it := range resp.Response.Items {
		if it.Error != "" {
			return fmt.Errorf("%s: %s", it.Key, it.Error)
		}
	}
	return nil
}

// decodeCost is the median time json.Unmarshal takes to decode body into a
// ProviderResponse, over 15 rounds of 200.
func decodeCost(body []byte) time.Duration {
	var rounds []time.Duration
	for range 15 {
		start := time.Now()
		for range 200 {
			var resp externaldata.ProviderResponse
			_ = json.Unmarshal(body, &resp)
		}
		rounds = append(rounds, time.Since(start)/200)
	}
	sort.Slice(rounds, func(i, j int) bool { return rounds[i] < rounds[j] })
	return rounds[len(rounds)/2]
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// firstItem is the first item of an encoded ProviderResponse, for the record.
func firstItem(body []byte) string {
	var resp struct {
		Response struct{ Items []json.RawMessage }
	}
	if json.Unmarshal(body, &resp) != nil || len(resp.Response.Items) == 0 {
		return string(body)
	}
	return string(resp.Response.Items[0])
}

func load(ctx context.Context, s *child, conf *tls.Config, body []byte, clients int, d time.Duration, keysPerReq int) (loadResult, error) {
	// One short warm-up so connections and buffers exist before measuring.
	hc := client.New(conf, clients, 10*time.Second)
	if err := gatekeeperCall(ctx, hc, s.url+"/validate", body, keysPerReq); err != nil {
		return loadResult{}, fmt.Errorf("%s: %w", s.url, err)
	}
	self0 := selfCPU()
	cpu0, err := processCPU(s.cmd.Process.Pid)
	if err != nil {
		return loadResult{}, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := gatekeeperCall(ctx, hc, s.url+"/validate", body, keysPerReq); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	cpu1, err := processCPU(s.cmd.Process.Pid)
	self1 := selfCPU()
	if err != nil {
		return loadResult{}, err
	}
	if firstErr != nil {
		return loadResult{}, firstErr
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	n := len(lat)
	keys := n * keysPerReq
	return loadResult{
		requests:     n,
		keysPerSec:   float64(keys) / d.Seconds(),
		p50:          lat[n/2],
		p99:          lat[n*99/100],
		cpuPerKey:    (cpu1 - cpu0) / time.Duration(keys),
		clientPerKey: (self1 - self0) / time.Duration(keys),
	}, nil
}

// processCPU is the user+system CPU time of pid, from /proc/PID/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	const clockTicks = 100 // USER_HZ, 100 on every Linux architecture Go supports
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// child is a server process started by the benchmark.
type child struct {
	cmd *exec.Cmd
	url string
}

func (c *child) stop() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// startChild runs self with args and waits for its JSON "serving" log line.
func startChild(self string, args ...string) (*child, error) {
	cmd := exec.Command(self, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving" {
				addr <- rec.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		return &child{cmd: cmd, url: "https://" + a}, nil
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s %s did not start", self, args[0])
	}
}

// runBaselineServer is the floor `moat bench` compares with: TLS 1.3 with a
// verified client certificate, the request decoded with encoding/json, and
// a response of one small item per key (the key and a digest string)
// encoded with encoding/json: what the least a digest provider can do costs.
func runBaselineServer(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("bench-baseline-server", stderr, "--addr A --certs DIR")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	dir := fs.String("certs", "", "dev-certs directory")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	tlsConf, err := client.TLSConfig(client.Files{CA: filepath.Join(*dir, "ca.crt")})
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(*dir, "tls.crt"), filepath.Join(*dir, "tls.key"))
	if err != nil {
		return err
	}
	srvConf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    tlsConf.RootCAs,
	}
	ln, err := tls.Listen("tcp", *addr, srvConf)
	if err != nil {
		return err
	}
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req externaldata.ProviderRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		resp := externaldata.ProviderResponse{APIVersion: req.APIVersion, Kind: "ProviderResponse"}
		resp.Response.Idempotent = true
		for _, k := range req.Request.Keys {
			resp.Response.Items = append(resp.Response.Items, externaldata.Item{Key: k, Value: digest})
		}
		b, _ := json.Marshal(&resp)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	fmt.Fprintf(stderr, `{"msg":"serving","addr":%q}`+"\n", ln.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
