package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/moat-dev/moat/provider/internal/certs"
	"github.com/moat-dev/moat/provider/internal/config"
)

func runDevCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev-certs", stderr, "--out DIR [--host NAME]...")
	out := fs.String("out", "", "directory to write ca.crt, ca.key, tls.crt, tls.key, client.crt, client.key, and node-ca.crt, node-client.crt, node-client.key (moat node-scan)")
	validity := fs.Duration("validity", 30*24*time.Hour, "how long the certificates are valid")
	var hosts config.List
	fs.Var(&hosts, "host", "extra DNS name or IP address for the server certificate (repeatable; localhost, 127.0.0.1 and ::1 are always included)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return &config.UsageError{Msg: "--out is required"}
	}
	set, err := certs.NewDevSet(hosts, *validity)
	if err != nil {
		return err
	}
	if err := set.Write(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a development CA, server and client certificates to %s (valid %s)\n", *out, *validity)
	fmt.Fprintf(stdout, "  serve:  moat serve --tls-cert %s --tls-key %s --client-ca %s\n",
		filepath.Join(*out, "tls.crt"), filepath.Join(*out, "tls.key"), filepath.Join(*out, "ca.crt"))
	fmt.Fprintf(stdout, "  lookup: moat lookup --ca %s --cert %s --key %s IMAGE...\n",
		filepath.Join(*out, "ca.crt"), filepath.Join(*out, "client.crt"), filepath.Join(*out, "client.key"))
	return nil
}
