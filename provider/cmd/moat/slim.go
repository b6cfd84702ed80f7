//go:build moat_slim

package main

import (
	"context"
	"fmt"
	"io"
)

// The slim build (the container image) answers a development command with
// where to find it rather than "unknown command".
func init() {
	for name := range devCommands {
		commands[name] = command{hidden: true, run: func(context.Context, []string, io.Writer, io.Writer) error {
			return fmt.Errorf("%s is not in this build: the container image holds only what runs in a cluster; use a full build (make build, or go install ./provider/cmd/moat)", name)
		}}
	}
}
