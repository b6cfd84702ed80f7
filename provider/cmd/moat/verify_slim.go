//go:build moat_slim

package main

import (
	"context"
	"errors"
	"io"
)

func init() {
	commands["verify"] = command{summary: verifySummary, run: func(context.Context, []string, io.Writer, io.Writer) error {
		return errors.New("this moat is the slim build of the container image, without verify; use a full build (make build, or go install ./provider/cmd/moat)")
	}}
}
