// Package worker executes queued runs: it claims them from the store under a
// lease, drives the executor, stores their output and every status transition,
// and recovers what a crashed worker left behind (runs whose lease lapsed,
// sandboxes no live run owns). Any number of workers, in any number of
// processes, may share one PostgreSQL database.
package worker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor"
	"github.com/gharart/coderun/store"
)

// Options configure a Worker.
type Options struct {
	// ID names the worker in leases and transitions (default: host-pid-random).
	ID string
	// Slots is how many runs execute at once (default 1).
	Slots int
	// Lease is how long a claim lasts without renewal (default 15 s); the
	// worker renews it every third of that.
	Lease time.Duration
	// Poll is how often the queue is looked at when nothing wakes the worker
	// (default 1 s).
	Poll time.Duration
	// Recover is how often lapsed runs and orphaned sandboxes are looked for
	// (default: Lease).
	Recover time.Duration
	// User is the uid:gid runs execute as (default the executor's).
	User string
	// Events hears of every change the worker commits to a run (claimed,
	// started, each stored chunk, finished, requeued), right after the
	// commit. It must not block.
	Events RunPublisher
	Logger *slog.Logger
	Now    func() time.Time
}

// RunPublisher hears that a run committed a change.
type RunPublisher interface {
	RunChanged(runID string)
}

// Worker executes runs.
type Worker struct {
	db   *store.DB
	exec executor.Executor
	opts Options
	log  *slog.Logger

	wake chan struct{}
	// slots holds a token per executing run.
	slots chan struct{}

	mu sync.Mutex
	// running maps the runs executing here to a function that stops them.
	running map[string]context.CancelCauseFunc
	wg      sync.WaitGroup
}

// New returns a worker over db and exec.
func New(db *store.DB, exec executor.Executor, opts Options) *Worker {
	if opts.ID == "" {
		opts.ID = defaultID()
	}
	if opts.Slots < 1 {
		opts.Slots = 1
	}
	if opts.Lease <= 0 {
		opts.Lease = 15 * time.Second
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Recover <= 0 {
		opts.Recover = opts.Lease
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Events == nil {
		opts.Events = unwatched{}
	}
	return &Worker{
		db: db, exec: exec, opts: opts,
		log:     opts.Logger.With("worker", opts.ID),
		wake:    make(chan struct{}, 1),
		slots:   make(chan struct{}, opts.Slots),
		running: map[string]context.CancelCauseFunc{},
	}
}

func defaultID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), rand.Text()[:6])
}

// unwatched is the Events of a worker whose runs nobody follows.
type unwatched struct{}

func (unwatched) RunChanged(string) {}

// ID names the worker.
func (w *Worker) ID() string { return w.opts.ID }

func (w *Worker) now() time.Time { return w.opts.Now().UTC().Truncate(time.Microsecond) }

// RunQueued wakes the worker to look at the queue now.
func (w *Worker) RunQueued() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Why a run's context was cancelled.
var (
	errCancelRequested = errors.New("cancel requested")
	errShutdown        = errors.New("worker shutting down")
	errLeaseLost       = errors.New("lease lost")
)

// CancelRequested stops the run at once if it executes here; otherwise its
// worker learns of the request when it next renews its lease.
func (w *Worker) CancelRequested(runID string) {
	w.mu.Lock()
	stop := w.running[runID]
	w.mu.Unlock()
	if stop != nil {
		stop(errCancelRequested)
	}
}

// Run claims and executes runs until ctx is done, then stops the runs still
// executing (they end errored: the worker went away) and returns.
func (w *Worker) Run(ctx context.Context) error {
	w.log.Info("worker started", "slots", w.opts.Slots)
	w.recoverLost(ctx)
	poll := time.NewTicker(w.opts.Poll)
	defer poll.Stop()
	recoverTick := time.NewTicker(w.opts.Recover)
	defer recoverTick.Stop()
	for {
		w.fillSlots(ctx)
		select {
		case <-ctx.Done():
			w.mu.Lock()
			for _, stop := range w.running {
				stop(errShutdown)
			}
			w.mu.Unlock()
			w.wg.Wait()
			w.log.Info("worker stopped")
			return nil
		case <-w.wake:
		case <-poll.C:
		case <-recoverTick.C:
			w.recoverLost(ctx)
		}
	}
}

// fillSlots claims queued runs while this worker has free slots.
func (w *Worker) fillSlots(ctx context.Context) {
	for ctx.Err() == nil {
		select {
		case w.slots <- struct{}{}:
		default:
			return // every slot busy; a finishing run wakes the loop
		}
		job, ok, err := w.claim(ctx)
		if err != nil || !ok {
			<-w.slots
			if err != nil && ctx.Err() == nil {
				w.log.Error("claiming a run failed", "err", err)
			}
			return
		}
		runCtx, stop := context.WithCancelCause(context.WithoutCancel(ctx))
		w.mu.Lock()
		w.running[job.RunID] = stop
		w.mu.Unlock()
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer func() {
				w.mu.Lock()
				delete(w.running, job.RunID)
				w.mu.Unlock()
				stop(nil)
				<-w.slots
				w.RunQueued()
			}()
			w.execute(runCtx, stop, job)
		}()
	}
}

func (w *Worker) claim(ctx context.Context) (job coderun.RunJob, ok bool, err error) {
	err = w.db.InTx(ctx, func(tx *store.Tx) error {
		now := w.now()
		job, ok, err = tx.ClaimRun(ctx, w.opts.ID, now, now.Add(w.opts.Lease))
		return err
	})
	if err == nil && ok {
		w.opts.Events.RunChanged(job.RunID)
	}
	return job, ok, err
}
