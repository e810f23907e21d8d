package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"chatr/internal/config"
	"chatr/internal/node"
)

// serveMain runs a node until SIGINT or SIGTERM, then drains and exits 0;
// SIGHUP reloads its TLS certificate.
func serveMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Parse(args, os.Getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatr: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	n, err := node.New(cfg, log, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "chatr: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // reload the TLS certificate
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				n.ReloadTLS() // logs how it went
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := n.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "chatr: %v\n", err)
		return 1
	}
	log.Info("stopped cleanly")
	return 0
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
