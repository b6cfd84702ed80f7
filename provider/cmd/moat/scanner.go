package main

import (
	"context"
	"io"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/config"
)

func runScanner(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("scanner", stderr, "--tls-cert FILE --tls-key FILE --client-ca FILE [--db-path FILE | --db-url URL] [flags]")
	s := config.NewScanner(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := s.Load(); err != nil {
		return err
	}
	if s.CheckOnly {
		_, err := io.WriteString(stdout, config.Print(fs))
		return err
	}
	log := newLogger(stderr, s.Log)
	sc, err := app.NewScanner(s.ServerOptions(), s.EngineConfig(), s.RegistryOptions(version), s.Workers, s.Certs(), log)
	if err != nil {
		return err
	}
	log.Info("moat scanner starting", "version", version)
	return sc.Run(ctx, s.Addr, s.MetricsAddr)
}
