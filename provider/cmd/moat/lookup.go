package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/moat-dev/moat/provider/internal/client"
	"github.com/moat-dev/moat/provider/internal/config"
	"github.com/moat-dev/moat/provider/internal/lookup"
)

func runLookup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lookup", stderr, "[--url URL] [--certs DIR | --ca FILE --cert FILE --key FILE] REF...")
	url := fs.String("url", "https://localhost:8443/validate", "provider endpoint: .../validate or .../mutate")
	certDir := fs.String("certs", "", "directory written by 'moat dev-certs': sets --ca, --cert and --key")
	ca := fs.String("ca", "", "CA that signed the provider's certificate")
	cert := fs.String("cert", "", "client certificate to present")
	key := fs.String("key", "", "client private key")
	output := fs.String("o", "text", "output: text (one line per key) or json (the ProviderResponse as received)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	keyErrors := fs.String("key-errors", "fail", "fail: exit 3 when a key's answer is an error; report: print it and exit 0 (a check that the provider answers at all, as the chart's helm test is)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return &config.UsageError{Msg: "name at least one image reference"}
	}
	if *certDir != "" {
		*ca = filepath.Join(*certDir, "ca.crt")
		*cert = filepath.Join(*certDir, "client.crt")
		*key = filepath.Join(*certDir, "client.key")
	}
	if *keyErrors != "fail" && *keyErrors != "report" {
		return &config.UsageError{Msg: fmt.Sprintf("--key-errors %q: want fail or report", *keyErrors)}
	}
	if *output != "text" && *output != "json" {
		return &config.UsageError{Msg: fmt.Sprintf("-o %q: want text or json", *output)}
	}
	conf, err := client.TLSConfig(client.Files{CA: *ca, Cert: *cert, Key: *key})
	if err != nil {
		return err
	}
	c := client.New(conf, 1, *timeout)
	code, raw, err := client.Post(ctx, c, *url, client.Body(fs.Args()))
	if err != nil {
		return err
	}
	var resp client.Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("HTTP %d, not a ProviderResponse: %s", code, raw)
	}
	if *output == "json" {
		fmt.Fprintf(stdout, "%s\n", raw)
	}
	if resp.Response.SystemError != "" {
		fmt.Fprintf(stderr, "moat lookup: HTTP %d: %s\n", code, resp.Response.SystemError)
		return exitCode(1)
	}
	failed := 0
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, it := range resp.Response.Items {
		if it.Error != "" {
			failed++
		}
		if *output == "text" {
			fmt.Fprintf(tw, "%s\t%s\n", it.Key, describe(it))
		}
	}
	tw.Flush()
	if failed > 0 && *keyErrors == "fail" {
		return exitCode(3)
	}
	return nil
}

// describe is one line for a person: the canonical reference pinned to the
// digest, or the error.
func describe(it client.Item) string {
	if it.Error != "" {
		return "error: " + it.Error
	}
	var s string
	if json.Unmarshal(it.Value, &s) == nil { // /mutate answers a string
		return s
	}
	v, err := it.Answer()
	if err != nil {
		return fmt.Sprintf("%s (%v)", it.Value, err)
	}
	// The value carries the digest alone; the canonical reference comes
	// from the key, read as the provider reads it.
	s = v.Digest
	if ref, _, err := lookup.ParseKey(it.Key); err == nil && v.Digest != "" {
		s = ref.Pinned(v.Digest)
	}
	if v.Scan != nil {
		s += "\n\tscan: " + v.Status + ": " + v.Reason
	}
	if v.Signature != nil {
		s += "\n\tsignature: " + v.Signature.Status
		if v.Signature.Reason != "" {
			s += ": " + v.Signature.Reason
		}
	}
	return s
}
