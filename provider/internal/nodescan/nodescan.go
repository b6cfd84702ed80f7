// Package nodescan is `moat node-scan`: it scans the node's own root file
// system (mounted read-only) with the embedded Grype engine, at start, on an
// interval and on a new database, and sends each report to the provider
// over mutual TLS. Between scans it sends the last report again, so a
// provider that restarted without a shared tier learns it soon.
package nodescan

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	"github.com/moat-dev/moat/provider/internal/answer"
	"github.com/moat-dev/moat/provider/internal/nodes"
	"github.com/moat-dev/moat/provider/internal/scan"
)

// RootScanner scans a host's root file system (grypescan.Engine).
type RootScanner interface {
	ScanRoot(ctx context.Context, root string) (scan.Result, error)
	Database() string
}

// Options configure an Agent.
type Options struct {
	// Root is where the host's / is mounted, read-only.
	Root string
	// Node is the node's name; Pool its node pool ("" for none).
	Node, Pool string
	// BootIDFile holds the boot ID (/proc/sys/kernel/random/boot_id: the
	// kernel's, the same in every container of the node).
	BootIDFile string
	// ReportURL is the provider's PUT /v1/node-report; Client reaches it
	// with the node scanner's client certificate.
	ReportURL string
	Client    *http.Client
	// Interval is how often the node is scanned again; Resend how often
	// the last report is sent again between scans, and how often the
	// database is checked for a new one.
	Interval, Resend time.Duration
}

// Agent scans one node and reports it.
type Agent struct {
	opts    Options
	scanner RootScanner
	m       *Metrics
	log     *slog.Logger
	last    *nodes.Report
}

// New returns an Agent.
func New(opts Options, s RootScanner, m *Metrics, log *slog.Logger) (*Agent, error) {
	if opts.Root == "" || opts.Node == "" || opts.ReportURL == "" || opts.Client == nil {
		return nil, fmt.Errorf("node scan: the root, the node's name and the provider's URL are required")
	}
	if opts.Interval <= 0 || opts.Resend <= 0 {
		return nil, fmt.Errorf("node scan: interval %s and resend %s must be positive durations", opts.Interval, opts.Resend)
	}
	return &Agent{opts: opts, scanner: s, m: m, log: log}, nil
}

// Run scans and reports until ctx ends. The first scan waits for a
// database.
func (a *Agent) Run(ctx context.Context) error {
	var scannedWith string
	var next time.Time
	for {
		db := a.scanner.Database()
		switch {
		case db == "":
			a.log.Info("waiting for a vulnerability database before the first scan")
		case db != scannedWith || !time.Now().Before(next):
			a.Scan(ctx)
			scannedWith, next = db, time.Now().Add(a.opts.Interval)
		default:
			a.send(ctx) // the last report again
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.opts.Resend):
		}
	}
}

// Scan scans the node once and sends the report; the report is returned.
func (a *Agent) Scan(ctx context.Context) nodes.Report {
	boot, err := os.ReadFile(a.opts.BootIDFile)
	r := nodes.Report{Node: a.opts.Node, Pool: a.opts.Pool, BootID: strings.TrimSpace(string(boot))}
	start := time.Now()
	var res scan.Result
	if err == nil {
		res, err = a.scanner.ScanRoot(ctx, a.opts.Root)
	} else {
		err = fmt.Errorf("reading the boot ID: %w", err)
	}
	a.m.Duration.Observe(time.Since(start).Seconds())
	if err != nil {
		r.Error, r.FailedAt = scan.OneLine(err.Error()), time.Now().UTC()
		a.m.Scans.WithLabelValues("failed").Inc()
		a.log.Error("node scan failed", "root", a.opts.Root, "error", err.Error())
	} else {
		r.Result = &res
		a.m.Scans.WithLabelValues("done").Inc()
		counts := map[string]int{}
		for _, f := range res.Findings {
			counts[scan.ParseSeverity(f.Severity)]++
		}
		for _, s := range answer.Severities {
			a.m.Findings.WithLabelValues(poolLabel(a.opts.Pool), s).Set(float64(counts[s]))
		}
		a.log.Info("node scanned", "node", a.opts.Node, "os", res.OS, "findings", len(res.Findings), "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	}
	a.last = &r
	a.send(ctx)
	return r
}

func poolLabel(p string) string {
	if p == "" {
		return "none"
	}
	return p
}

// send PUTs the last report to the provider.
func (a *Agent) send(ctx context.Context) {
	if a.last == nil {
		return
	}
	if err := Send(ctx, a.opts.Client, a.opts.ReportURL, *a.last); err != nil {
		a.m.Sends.WithLabelValues("failed").Inc()
		a.log.Warn("the node report did not reach the provider; sent again later", "url", a.opts.ReportURL, "error", err.Error())
		return
	}
	a.m.Sends.WithLabelValues("done").Inc()
}

// Send PUTs r to url.
func Send(ctx context.Context, c *http.Client, url string, r nodes.Report) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// Metrics are the node scanner's: each DaemonSet pod exports its own node's,
// so a pool's figures are a sum over its pods and the pool label has as
// many values as the cluster has pools.
type Metrics struct {
	Registry *prometheus.Registry
	Scans    *prometheus.CounterVec
	Sends    *prometheus.CounterVec
	Duration prometheus.Histogram
	Findings *prometheus.GaugeVec
}

// NewMetrics returns the node scanner's metrics on a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_node_scans_total", Help: "Scans of this node's root file system, by result (done, failed).",
		}, []string{"result"}),
		Sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_node_reports_sent_total", Help: "Reports sent to the provider, by result (done, failed).",
		}, []string{"result"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "moat_node_scan_duration_seconds", Help: "How long a scan of this node took.",
			Buckets: []float64{1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		Findings: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_node_findings", Help: "Findings of the last scan of this node, by node pool and severity.",
		}, []string{"pool", "severity"}),
	}
	m.Registry.MustRegister(m.Scans, m.Sends, m.Duration, m.Findings)
	for _, r := range []string{"done", "failed"} {
		m.Scans.WithLabelValues(r)
		m.Sends.WithLabelValues(r)
	}
	return m
}

// ReadPool reads node's pool from its labels through the Kubernetes API.
func ReadPool(ctx context.Context, kube rest.Interface, node string) (string, error) {
	var n corev1.Node
	if err := kube.Get().Resource("nodes").Name(node).Do(ctx).Into(&n); err != nil {
		return "", fmt.Errorf("reading node %s for its pool label (grant get on nodes): %w", node, err)
	}
	return nodes.PoolOf(n.Labels), nil
}
