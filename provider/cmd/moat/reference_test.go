package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
)

var updateReference = flag.Bool("update", false, "rewrite docs/reference/flags.md from the commands' help")

const referenceFile = "../../../docs/reference/flags.md"

// docs/reference/flags.md is the binary's own help, so the reference and
// the flags cannot drift: make test fails when they differ.
func TestFlagReferenceIsTheBinarysHelp(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("# Flag reference\n\n")
	b.WriteString("Generated from `moat COMMAND --help` by `go test ./provider/cmd/moat -run FlagReference -update`; do not\n")
	b.WriteString("edit. Every flag of `serve` and `scanner` is also a key of their `--config` file (see\n")
	b.WriteString("[configuration](../configuration.md)). A duration is written `90s`, `5m`, `6h`; where 0 is allowed, the\n")
	b.WriteString("help says what it means, and everywhere else 0 is refused at start.\n")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden && n != "version" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		var help bytes.Buffer
		if code := run(context.Background(), []string{n, "--help"}, io.Discard, &help); code != 0 {
			t.Fatalf("moat %s --help: exit %d", n, code)
		}
		summary := commands[n].summary
		fmt.Fprintf(&b, "\n## moat %s\n\n%s%s.\n\n```\n%s```\n", n, strings.ToUpper(summary[:1]), summary[1:], help.String())
	}
	if *updateReference {
		if err := os.WriteFile(referenceFile, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := os.ReadFile(referenceFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cur, b.Bytes()) {
		t.Fatalf("%s is out of date: go test ./provider/cmd/moat -run FlagReference -update", referenceFile)
	}
}
