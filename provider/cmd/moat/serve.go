package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/moat-dev/moat/provider/internal/app"
	"github.com/moat-dev/moat/provider/internal/config"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr, "--tls-cert FILE --tls-key FILE --client-ca FILE [flags]")
	s := config.NewServe(fs)
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
	a, err := app.New(s.App(version), log)
	if err != nil {
		return err
	}
	log.Info("moat starting", "version", version, "scanner", s.Scanner)
	if err := a.Run(ctx, s.Addr, s.MetricsAddr); err != nil {
		return err
	}
	log.Info("moat stopped")
	return nil
}

// newLogger writes l's format at l's level (both checked by config).
func newLogger(w io.Writer, l config.Log) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
