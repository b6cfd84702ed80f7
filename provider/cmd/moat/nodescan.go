package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/config"
	"github.com/moat-dev/moat/provider/internal/credentials"
	"github.com/moat-dev/moat/provider/internal/metrics"
	"github.com/moat-dev/moat/provider/internal/nodescan"
	"github.com/moat-dev/moat/provider/internal/registry"
)

func runNodeScan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("node-scan", stderr, "--provider-url URL --provider-ca FILE --tls-cert FILE --tls-key FILE [--db-path FILE | --db-url URL] [flags]")
	s := config.NewNodeScan(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := s.Load(); err != nil {
		return err
	}
	if s.CheckOnly {
		_, err := io.WriteString(stdout, config.Print(fs))
		return err
	}
	log := newLogger(stderr, s.Log)
	// A scan reads the whole file system: it yields the CPU to the node's
	// workloads.
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, s.Nice); err != nil {
		log.Warn("could not lower the scan's CPU priority", "nice", s.Nice, "error", err.Error())
	}
	reg, err := registry.New(registry.Options{PerHostConcurrency: 1, UserAgent: "moat/" + version, Log: log}, metrics.New())
	if err != nil {
		return err
	}
	engine, db, err := app.NewEngine(s.EngineConfig(), reg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	go app.KeepDB(ctx, db, s.EngineConfig(), log)

	conf, err := client.TLSConfig(s.ClientFiles())
	if err != nil {
		return err
	}
	pool := ""
	if kube, err := credentials.KubeClient(s.Kubeconfig); err != nil {
		log.Warn("the node pool is not known; findings are labelled pool=none", "error", err.Error())
	} else if pool, err = nodescan.ReadPool(ctx, kube, s.Node); err != nil {
		log.Warn("the node pool is not known; findings are labelled pool=none", "error", err.Error())
	}
	m := nodescan.NewMetrics()
	agent, err := nodescan.New(nodescan.Options{Root: s.Root, Node: s.Node, Pool: pool, BootIDFile: s.BootIDFile,
		ReportURL: s.ProviderURL, Client: client.New(conf, 1, 2*time.Minute), Interval: s.Interval, Resend: s.Resend}, engine, m, log)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", s.MetricsAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ops := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := ops.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "error", err.Error())
		}
	}()
	defer ops.Close()
	log.Info("moat node-scan starting", "version", version, "node", s.Node, "pool", pool, "root", s.Root)
	return agent.Run(ctx)
}
