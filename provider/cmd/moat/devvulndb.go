//go:build !moat_slim

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/moat-dev/moat/provider/internal/config"
	"github.com/moat-dev/moat/provider/internal/samples"
)

func runDevVulnDB(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev-vulndb", stderr, "--out FILE")
	out := fs.String("out", "", "file to write (vulnerability.db), for --db-path")
	later := fs.Bool("later", false, "also the advisory a later database adds ("+samples.Later.ID+": the clean sample becomes critical), to try what a new CVE does")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return &config.UsageError{Msg: "--out is required"}
	}
	vulns := samples.Vulns
	if *later {
		vulns = samples.WithLater()
	}
	if err := samples.WriteDBOf(*out, vulns); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sample vulnerability database written to %s (test data, not real advisories):\n", *out)
	for _, v := range vulns {
		fixed := v.Fixed
		if fixed == "" {
			fixed = "(no fix)"
		}
		fmt.Fprintf(stdout, "  %-15s %-9s npm %-22s fixed in %s\n", v.ID, v.Severity, v.Package, fixed)
	}
	return nil
}
