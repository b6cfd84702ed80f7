//go:build !moat_slim

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/moat-dev/moat/provider/internal/devregistry"
)

func runDevRegistry(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev-registry", stderr, "[--addr HOST:PORT] [--seed]")
	addr := fs.String("addr", "127.0.0.1:5001", "address to listen on (plain HTTP: loopback only is wise)")
	seed := fs.Bool("seed", true, "push the sample images after start")
	delay := fs.Duration("delay", 0, "latency added to every request (to try slow registries)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	reg := devregistry.New()
	reg.SetDelay(*delay)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: reg, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	host := ln.Addr().String()
	fmt.Fprintf(stdout, "dev registry (in memory) listening on http://%s\n", host)
	if *seed {
		imgs, err := devregistry.Seed(ctx, host)
		if err != nil {
			srv.Close()
			return fmt.Errorf("seeding sample images: %w", err)
		}
		for _, im := range imgs {
			kind := "image"
			if im.Index {
				kind = "index"
			}
			fmt.Fprintf(stdout, "  %-45s %s  %s\n", im.Ref, kind, im.Digest)
		}
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
