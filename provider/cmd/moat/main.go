// Command moat is Moat's image-trust provider for OPA Gatekeeper.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/moat-dev/moat/provider/internal/config"
)

// version is stamped at build time (-ldflags "-X main.version=…").
var version = "dev"

type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

type command struct {
	summary string
	run     runFunc
	hidden  bool
}

var commands = map[string]command{
	"serve":       {summary: "serve the external-data provider over mutual TLS", run: runServe},
	"dev-certs":   {summary: "write a throw-away CA, server and client certificates", run: runDevCerts},
	"scanner":     {summary: "serve the vulnerability scanner (Grype) for `serve --scanner=service`", run: runScanner},
	"lookup":      {summary: "send one ProviderRequest and print the answers", run: runLookup},
	"constraints": {summary: "apply a release's Gatekeeper constraints once their kinds are served, delete the ones it no longer has (the chart's hook)", run: runConstraints},
	"node-scan":   {summary: "scan this node's own file system and report it to the provider (the chart's DaemonSet)", run: runNodeScan},
	"version": {summary: "print the version", run: func(_ context.Context, _ []string, out, _ io.Writer) error {
		_, err := fmt.Fprintln(out, version)
		return err
	}},
}

// devCommands are development and CI tools: the full build (dev.go) has
// them, the container image's slim build (-tags moat_slim, slim.go) does
// not, so the image holds only what runs in a cluster.
var devCommands = map[string]command{
	"dev-vulndb":   {summary: "write the sample vulnerability database the demo images are scanned with"},
	"dev-registry": {summary: "run an in-memory OCI registry with sample images (development)"},
	"bench":        {summary: "measure the provider against a minimal server (see make bench)"},
	"verify":       {summary: "run gator Suites, with external data, offline (gator verify cannot load external_data)"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "moat: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	var ue *config.UsageError
	var ec exitCode
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue): // a mistake on the command line or in a setting
		fmt.Fprintf(stderr, "moat %s: %s\n", args[0], ue.Msg)
		return 2
	case errors.As(err, &ec):
		return int(ec)
	}
	fmt.Fprintf(stderr, "moat %s: %v\n", args[0], err)
	return 1
}

// exitCode ends a command with a given code after it printed its own output.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "moat: image trust for OPA Gatekeeper\n\nUsage: moat COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'moat COMMAND --help' for a command's flags.")
}

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("moat "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: moat %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a bad flag is a usage error (already printed).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return exitCode(2)
	}
	return nil
}
