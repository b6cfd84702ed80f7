//go:build !moat_slim

package main

import (
	"context"
	"io"

	"github.com/moat-dev/moat/provider/internal/config"
	"github.com/moat-dev/moat/provider/internal/verify"
)

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", stderr, "[flags] PATH...   (PATH/... for every suite below PATH)")
	var o verify.Options
	fs.StringVar(&o.ProviderURL, "provider-url", "", "a running provider's base URL (https://host:port); default: a fixture provider answering from each suite's external-data.yaml")
	fs.StringVar(&o.CA, "ca", "", "with --provider-url: the CA of the provider's certificate")
	fs.StringVar(&o.Cert, "cert", "", "with --provider-url: the client certificate to present")
	fs.StringVar(&o.Key, "key", "", "with --provider-url: the client key")
	fs.BoolVar(&o.CEL, "enable-k8s-native-validation", true, "run CEL where a template has it, as Gatekeeper does; false runs the Rego")
	fs.StringVar(&o.Run, "run", "", "only tests and cases matching this regular expression (as gator verify --run)")
	fs.StringVar(&o.Run, "r", "", "short for --run")
	fs.BoolVar(&o.Verbose, "v", false, "print every test and case, not only failures")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return &config.UsageError{Msg: "name at least one suite directory (PATH/... for every suite below it)"}
	}
	if o.ProviderURL != "" && (o.CA == "" || o.Cert == "" || o.Key == "") {
		return &config.UsageError{Msg: "--provider-url needs --ca, --cert and --key"}
	}
	failed, err := verify.Run(ctx, fs.Args(), o, stdout)
	if err != nil {
		return err
	}
	if failed {
		return exitCode(1)
	}
	return nil
}
