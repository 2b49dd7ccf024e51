package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor"
	"github.com/gharart/coderun/store"
)

// execute runs one claimed job to its end and records how it ended. ctx is
// cancelled (with a cause) to stop the run: a cancel request, the worker
// shutting down, or the lease lost.
func (w *Worker) execute(ctx context.Context, stop context.CancelCauseFunc, job coderun.RunJob) {
	log := w.log.With("run", job.RunID, "handle", job.Handle)
	// Cleanup must happen however the run ends, and must not be cut short.
	cleanup := context.WithoutCancel(ctx)
	defer func() {
		if err := w.exec.Cleanup(cleanup, job.RunID); err != nil {
			log.Error("removing the run's sandbox failed; recovery will retry", "err", err)
		}
	}()
	heartbeatDone := make(chan struct{})
	defer close(heartbeatDone)
	go w.heartbeat(ctx, stop, job.RunID, heartbeatDone)

	result := w.runJob(ctx, stop, job, log)
	if errors.Is(context.Cause(ctx), errLeaseLost) {
		log.Warn("the run's lease was lost; its new owner records its end")
		return
	}
	err := w.db.InTx(cleanup, func(tx *store.Tx) error {
		return tx.FinishRun(cleanup, job.RunID, w.opts.ID, result)
	})
	if err != nil {
		log.Error("recording the run's end failed", "status", result.Status, "err", err)
		return
	}
	w.opts.Events.RunChanged(job.RunID)
	log.Info("run finished", "status", result.Status, "reason", result.Reason)
}

// runJob prepares and runs the job's sandbox and says how the run ended.
func (w *Worker) runJob(ctx context.Context, stop context.CancelCauseFunc, job coderun.RunJob, log *slog.Logger) store.RunResult {
	spec := executor.Spec{
		RunID:   job.RunID,
		Image:   job.Image,
		Command: job.Command,
		Args:    job.Args,
		Stdin:   job.Stdin,
		Env:     job.Env,
		Limits:  job.Limits,
		Network: job.Network,
		User:    w.opts.User,
		Labels:  map[string]string{"coderun.handle": job.Handle},
	}
	for _, f := range job.Files {
		spec.Files = append(spec.Files, executor.File{Path: f.Path, Data: f.Data, Mode: 0o644})
	}
	// A sandbox left by a worker that died with this run claimed would clash
	// with the new one's name.
	if err := w.exec.Cleanup(ctx, job.RunID); err != nil {
		return w.platformFailure(err, log)
	}
	sandbox, err := w.exec.Prepare(ctx, spec)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return w.stopped(cause)
		}
		return w.platformFailure(err, log)
	}
	out := newOutput(w, job.RunID, stop)
	outcome, err := sandbox.Run(ctx, out)
	if ferr := out.close(); ferr != nil && err == nil {
		err = ferr
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return w.stopped(cause)
		}
		return w.platformFailure(err, log)
	}
	return w.result(ctx, outcome, job.Limits)
}

// result maps an executor outcome to the run's terminal status.
func (w *Worker) result(ctx context.Context, o executor.Outcome, limits coderun.Limits) store.RunResult {
	r := store.RunResult{At: w.now(), Truncated: o.Truncated}
	code := o.ExitCode
	switch o.End {
	case executor.Exited:
		r.ExitCode = &code
		if code == 0 {
			r.Status, r.Reason = coderun.RunSucceeded, "exited with code 0"
			return r
		}
		r.Status, r.Reason = coderun.RunFailed, fmt.Sprintf("exited with code %d", code)
		if code > 128 {
			r.Reason = fmt.Sprintf("killed by signal %d (exit code %d)", code-128, code)
		}
	case executor.OOMKilled:
		r.ExitCode = &code
		r.Status = coderun.RunFailed
		r.Error = &coderun.ErrorDetail{Code: coderun.ErrOOMKilled, Message: fmt.Sprintf("killed for using more than its %d MiB of memory", limits.MemoryMiB)}
		r.Reason = r.Error.Message
	case executor.OutputLimitReached:
		r.Status = coderun.RunFailed
		r.Error = &coderun.ErrorDetail{Code: coderun.ErrOutputLimitExceeded, Message: fmt.Sprintf("killed for writing more than %d bytes of output", limits.OutputBytes)}
		r.Reason = r.Error.Message
	case executor.TimedOut:
		r.Status, r.Reason = coderun.RunTimedOut, fmt.Sprintf("killed at its wall-time limit of %d s", limits.TimeoutSeconds)
	case executor.Cancelled:
		return w.stopped(context.Cause(ctx))
	default:
		r.Status = coderun.RunErrored
		r.Error = &coderun.ErrorDetail{Code: coderun.ErrExecutorUnavailable, Message: fmt.Sprintf("the executor reported an unknown end %q", o.End)}
		r.Reason = r.Error.Message
	}
	return r
}

// stopped is the result of a run this worker stopped, for cause.
func (w *Worker) stopped(cause error) store.RunResult {
	r := store.RunResult{At: w.now()}
	if errors.Is(cause, errCancelRequested) {
		r.Status, r.Reason = coderun.RunCancelled, "cancelled on request"
		return r
	}
	r.Status = coderun.RunErrored
	r.Error = &coderun.ErrorDetail{Code: coderun.ErrWorkerLost, Message: "the worker executing the run stopped: " + causeText(cause)}
	r.Reason = r.Error.Message
	return r
}

func causeText(err error) string {
	if err == nil {
		return "unknown"
	}
	return err.Error()
}

// platformFailure is the result of a run the platform could not execute.
func (w *Worker) platformFailure(err error, log *slog.Logger) store.RunResult {
	r := store.RunResult{At: w.now(), Status: coderun.RunErrored}
	switch {
	case errors.Is(err, executor.ErrImageUnavailable):
		r.Error = &coderun.ErrorDetail{Code: coderun.ErrImageUnavailable, Message: "the runtime's image is not on the engine; validate the runtime again to pull it"}
	case errors.Is(err, executor.ErrImageUnsupported):
		r.Error = &coderun.ErrorDetail{Code: coderun.ErrImageUnsupported, Message: err.Error()}
	default:
		log.Error("the executor failed", "err", err)
		r.Error = &coderun.ErrorDetail{Code: coderun.ErrExecutorUnavailable, Message: "the container engine could not run the program"}
	}
	r.Reason = r.Error.Message
	return r
}

// heartbeat renews the run's lease until done, and stops the run when a
// cancel is requested or the lease turns out to be lost.
func (w *Worker) heartbeat(ctx context.Context, stop context.CancelCauseFunc, runID string, done <-chan struct{}) {
	t := time.NewTicker(w.opts.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		var cancelRequested bool
		err := w.db.InTx(context.WithoutCancel(ctx), func(tx *store.Tx) error {
			var err error
			cancelRequested, err = tx.RenewLease(ctx, runID, w.opts.ID, w.now().Add(w.opts.Lease))
			return err
		})
		switch {
		case errors.Is(err, store.ErrLeaseLost):
			stop(errLeaseLost)
			return
		case err != nil:
			w.log.Warn("renewing a lease failed", "run", runID, "err", err)
		case cancelRequested:
			stop(errCancelRequested)
		}
	}
}
