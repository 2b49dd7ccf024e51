package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
	"github.com/gharart/coderun/web"
	"github.com/gharart/coderun/worker"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	p, err := startProcess(ctx, "serve", args, stderr, nil)
	if err != nil {
		return err
	}
	defer p.close()
	cfg, log, db, engine := p.cfg, p.log, p.db, p.engine
	jwtCfg, err := cfg.jwtConfig()
	if err != nil {
		return err
	}
	// The engine may come up after the service: readiness reports it until then.
	if err := engine.Ping(ctx); err != nil {
		log.Warn("the container engine is not reachable yet", "err", err)
	}

	// Followers in this process watch runs through the hub. With PostgreSQL,
	// changes also travel to and from other processes through NOTIFY.
	hub := events.NewHub(db, events.Options{Logger: log})
	var publish events.RunPublisher = hub
	if db.Dialect() == "postgres" {
		notifier, stopNotifying := notifyRunChanges(db, hub, log)
		defer stopNotifying()
		publish = notifier
	}
	opts := service.Options{Images: engine, ReleaseImages: cfg.ReleaseImages, AllowNetwork: cfg.AllowNetwork, ImagePrefixes: cfg.imagePrefixes(), Logger: log, Events: hub, Publish: publish}
	var wrk *worker.Worker
	if cfg.WorkerSlots > 0 {
		wopts := cfg.workerOptions(log)
		wopts.Events = publish
		wrk = worker.New(db, engine, wopts)
		opts.Runs = wrk
	}
	svc := service.New(db, opts)
	authn := auth.NewAuthenticator(jwtCfg, svc, nil)
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	handler := rest.New(rest.Options{
		Service:       svc,
		Authenticator: authn,
		GraphQL: resolvers.NewHandler(svc, resolvers.Options{
			Authenticate:  rest.GuardAuthentication(authn.Authenticate),
			Charge:        rest.Charge,
			Introspection: cfg.Introspection,
			Logger:        log,
		}),
		Checks: []rest.Check{
			{Name: "database", Ping: db.Ping},
			{Name: "engine", Ping: engine.Ping},
		},
		Viewer:         web.Handler(),
		MaxBodyBytes:   cfg.MaxBodyBytes,
		Throttles:      &cfg.Throttles,
		TrustedProxies: cfg.TrustedProxies,
		Logger:         log,
		Metrics:        metrics,
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
	log.Info("coderun serving", "addr", ln.Addr().String(), "database", db.Dialect(), "worker_slots", cfg.WorkerSlots)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if db.Dialect() == "postgres" {
		go events.Listen(ctx, cfg.databaseURL(), hub, log)
	}
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		if wrk != nil {
			_ = wrk.Run(ctx)
		}
	}()
	housekept := make(chan struct{})
	go func() { defer close(housekept); svc.Housekeep(ctx) }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	log.Info("coderun shutting down")
	stop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutdownCtx); serr != nil && !errors.Is(serr, context.DeadlineExceeded) && err == nil {
		err = serr
	}
	// The last requests answered are written before the database closes.
	svc.FlushRequests(shutdownCtx)
	<-workerDone
	<-housekept
	return err
}

// work runs a worker alone: it shares runs with `serve` through PostgreSQL.
func work(ctx context.Context, args []string, stderr io.Writer) error {
	p, err := startProcess(ctx, "worker", args, stderr, func(cfg *config) error {
		if cfg.WorkerSlots < 1 {
			return fmt.Errorf("%w: a worker needs at least one slot (CODERUN_WORKER_SLOTS)", errUsage)
		}
		if !store.IsPostgresURL(cfg.databaseURL()) {
			return fmt.Errorf("%w: a separate worker shares runs with serve only through PostgreSQL (CODERUN_DATABASE_URL=postgres://…); on SQLite, serve runs its own worker (CODERUN_WORKER_SLOTS)", errUsage)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer p.close()
	cfg, log, db, engine := p.cfg, p.log, p.db, p.engine
	if err := engine.Ping(ctx); err != nil {
		return fmt.Errorf("the container engine is not reachable: %w", err)
	}
	// Followers are served by other processes: they hear of this worker's
	// runs through NOTIFY.
	wopts := cfg.workerOptions(log)
	notifier, stopNotifying := notifyRunChanges(db, nil, log)
	defer stopNotifying()
	wopts.Events = notifier
	return worker.New(db, engine, wopts).Run(ctx)
}

// notifyRunChanges publishes run changes to local (if not nil) and, through
// PostgreSQL NOTIFY, to other processes, until stop is called; stop sends
// what is still pending. It does not end with the command's context: it must
// outlive the worker, which records the end of the runs it stops on shutdown.
func notifyRunChanges(db *store.DB, local events.RunPublisher, log *slog.Logger) (n *events.Notifier, stop func()) {
	n = events.NewNotifier(db, local, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	return n, func() { cancel(); <-done }
}

// openEngine returns the Docker engine client, labelling sandboxes with the
// installation's name so that recovery never touches another installation's.
func openEngine(ctx context.Context, db *store.DB, cfg *config) (*docker.Engine, error) {
	id, err := db.InstallationID(ctx)
	if err != nil {
		return nil, err
	}
	opts := []docker.Option{docker.WithInstance(id), docker.WithNetwork(cfg.AllowNetwork)}
	// Only a process that runs code needs coderun-init; one that does is
	// refused at start without it, not run by run.
	if cfg.WorkerSlots > 0 {
		init, err := cfg.initBinary()
		if err != nil {
			return nil, err
		}
		opts = append(opts, docker.WithInit(init))
	}
	engine, err := docker.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("configure the Docker client: %w", err)
	}
	return engine, nil
}

// process is what serve and worker start from: the configuration, the
// logger, the migrated database and the engine of this installation.
type process struct {
	cfg    *config
	log    *slog.Logger
	db     *store.DB
	engine *docker.Engine
}

func startProcess(ctx context.Context, name string, args []string, stderr io.Writer, check func(*config) error) (*process, error) {
	cfg := &config{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg.bindFlags(fs)
	if pos, err := parseFlags(fs, args, stderr); err != nil {
		return nil, err
	} else if len(pos) > 0 {
		return nil, fmt.Errorf("%w: %s takes no arguments", errUsage, name)
	}
	// What the command needs of its configuration is checked before
	// anything is opened (or, for SQLite, created).
	if check != nil {
		if err := check(cfg); err != nil {
			return nil, err
		}
	}
	log, err := cfg.logger()
	if err != nil {
		return nil, err
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	engine, err := openEngine(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &process{cfg: cfg, log: log, db: db, engine: engine}, nil
}

func (p *process) close() {
	p.engine.Close()
	p.db.Close()
}
