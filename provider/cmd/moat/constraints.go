package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/moat-dev/moat/provider/internal/config"
	"github.com/moat-dev/moat/provider/internal/constraintsync"
	"github.com/moat-dev/moat/provider/internal/credentials"
)

func runConstraints(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("constraints", stderr, "--release NAME (--from DIR | --delete-all) [--timeout 5m] [--kubeconfig FILE]")
	release := fs.String("release", "", "the Helm release whose constraints these are (label "+constraintsync.ReleaseLabel+")")
	from := fs.String("from", "", "a directory of YAML files of constraints (the chart's <release>-constraints ConfigMap)")
	deleteAll := fs.Bool("delete-all", false, "delete every constraint of the release (the chart's pre-delete hook)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for Gatekeeper to serve the constraint kinds, and for the API server")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *release == "":
		return &config.UsageError{Msg: "--release is required"}
	case (*from == "") == !*deleteAll:
		return &config.UsageError{Msg: "name either --from DIR or --delete-all"}
	case *timeout <= 0:
		return &config.UsageError{Msg: fmt.Sprintf("--timeout %s: must be positive", *timeout)}
	}
	log := newLogger(stderr, config.Log{Format: "text", Level: "info"})

	desired := []string{}
	var files []io.Reader
	if *from != "" {
		paths, err := filepath.Glob(filepath.Join(*from, "*.yaml"))
		if err != nil {
			return err
		}
		sort.Strings(paths)
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			files = append(files, f)
			desired = append(desired, filepath.Base(p))
		}
	}
	objs, err := constraintsync.Decode(files...)
	if err != nil {
		return err
	}
	cfg, err := credentials.RESTConfig(*kubeconfig)
	if err != nil {
		return err
	}
	// client-go's default of 5 requests a second would spend seconds on a
	// set of forty constraints.
	cfg.QPS, cfg.Burst = 50, 100
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	log.Info("syncing constraints", "release", *release, "files", desired, "constraints", len(objs))
	res, err := constraintsync.Sync(ctx, dyn, objs, constraintsync.Options{Release: *release, Timeout: *timeout, Log: log})
	fmt.Fprintf(stdout, "%d constraints applied, %d deleted\n", len(res.Applied), len(res.Deleted))
	return err
}
