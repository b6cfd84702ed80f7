package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/devregistry"
	"github.com/moat-dev/moat/provider/internal/samples"
	"github.com/moat-dev/moat/provider/testenv/answertest"
)

func pushSample(t *testing.T, host, repoTag, sample string) string {
	t.Helper()
	img, err := samples.Image(samples.Images[sample])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := devregistry.Write(context.Background(), host+"/"+repoTag, img); err != nil {
		t.Fatal(err)
	}
	return host + "/" + repoTag
}

// scanStatus asks /validate about key until status is one of want.
func scanStatus(t *testing.T, c *http.Client, url, key string, want ...string) (status, reason string) {
	t.Helper()
	v := answertest.Check(t, scanValue(t, c, url, key, want...))
	return v.Status, v.Reason
}

// scanValue asks /validate about key until its scan status is one of want,
// and returns that value as answered.
func scanValue(t *testing.T, c *http.Client, url, key string, want ...string) json.RawMessage {
	t.Helper()
	var status, reason string
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, _, err := client.Lookup(context.Background(), c, url+"/validate", []string{key})
		if err == nil && len(resp.Response.Items) == 1 {
			raw := resp.Response.Items[0].Value
			v := answertest.Check(t, raw)
			if v.Scan == nil {
				t.Fatalf("%s: no scan part", key)
			}
			for _, w := range want {
				if v.Status == w {
					return raw
				}
			}
			status, reason = v.Status, v.Reason
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s %q (err %v), want %v", key, status, reason, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scannerService is a free address for `moat scanner` with the sample
// database, reading images from host, and a function that starts it there
// (again, after a kill).
func scannerService(t *testing.T, certDir, host string) (string, func() *serveProc) {
	t.Helper()
	db := filepath.Join(t.TempDir(), "vulnerability.db")
	if err := samples.WriteDB(db); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, func() *serveProc {
		return startMoat(t, "scanner", certDir, "--addr", addr, "--db-path", db,
			"--db-dir", filepath.Join(t.TempDir(), "vulndb"), "--insecure-registries", host)
	}
}

func TestRemoteScannerKilledAndRestarted(t *testing.T) {
	dir := devCerts(t)
	reg := httptest.NewServer(devregistry.New())
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	critical := pushSample(t, host, "app/critical:1", "critical")
	clean := pushSample(t, host, "app/clean:1", "clean")
	scannerAddr, startScanner := scannerService(t, dir, host)
	scanner := startScanner()
	serve := startServe(t, dir, "--insecure-registries", host, "--scanner", "service",
		"--scanner-url", "https://"+scannerAddr, "--scanner-ca", filepath.Join(dir, "ca.crt"),
		"--scanner-cert", filepath.Join(dir, "client.crt"), "--scanner-key", filepath.Join(dir, "client.key"),
		"--scan-failed-ttl", "200ms")
	c := certClient(t, dir)

	if s, r := scanStatus(t, c, serve.url, critical, "rejected"); !strings.Contains(r, "MOAT-TEST-0001") {
		t.Errorf("through the scanner service: %s %q", s, r)
	}

	_ = scanner.cmd.Process.Kill()
	<-scanner.done
	if _, r := scanStatus(t, c, serve.url, clean, "scan_failed"); !strings.Contains(r, "scanner service") || !strings.Contains(r, "unreachable") {
		t.Errorf("with the scanner down: %q", r)
	}
	if s, _ := scanStatus(t, c, serve.url, critical, "rejected", "scan_failed"); s != "rejected" {
		t.Errorf("a report made before the scanner went down is still served: %s", s)
	}

	startScanner()
	scanStatus(t, c, serve.url, clean, "accepted") // recovers without restarting the provider
}
