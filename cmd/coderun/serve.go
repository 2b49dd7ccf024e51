package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.bindFlags(fs)
	if pos, err := parseFlags(fs, args, stderr); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: serve takes no arguments", errUsage)
	}
	log, err := cfg.logger()
	if err != nil {
		return err
	}
	jwtCfg, err := cfg.jwtConfig()
	if err != nil {
		return err
	}
	db, err := openStore(ctx, &cfg)
	if err != nil {
		return err
	}
	defer db.Close()

	// The engine may come up after the service: readiness reports it until then.
	engine, err := docker.New()
	if err != nil {
		return fmt.Errorf("configure the Docker client: %w", err)
	}
	defer engine.Close()
	if err := engine.Ping(ctx); err != nil {
		log.Warn("the container engine is not reachable yet", "err", err)
	}

	svc := service.New(db, service.Options{Images: engine, AllowNetwork: cfg.AllowNetwork, Logger: log})
	authn := auth.NewAuthenticator(jwtCfg, svc, nil)
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	handler := rest.New(rest.Options{
		Service:       svc,
		Authenticator: authn,
		GraphQL: resolvers.NewHandler(svc, resolvers.Options{
			Authenticate:  authn.Authenticate,
			Introspection: cfg.Introspection,
			Logger:        log,
		}),
		Checks: []rest.Check{
			{Name: "database", Ping: db.Ping},
			{Name: "engine", Ping: engine.Ping},
		},
		MaxBodyBytes: cfg.MaxBodyBytes,
		Logger:       log,
		Metrics:      metrics,
	})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		// No WriteTimeout: validate-image may pull for minutes, and websockets
		// set a deadline per message instead.
	}
	log.Info("coderun serving", "addr", ln.Addr().String(), "database", db.Dialect())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("coderun shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
