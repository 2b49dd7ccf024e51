package worker

import (
	"context"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// maxClaims is how many times a run may be claimed: a run whose worker died
// before the program started is queued once more, not forever.
const maxClaims = 2

// recoverLost finishes what dead workers left: active runs whose lease has
// lapsed are queued again (if their program never started, once) or end
// errored/worker_lost; then sandboxes that no live run owns are removed.
func (w *Worker) recoverLost(ctx context.Context) {
	now := w.now()
	var lapsed []store.LapsedRun
	err := w.db.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if lapsed, err = tx.LapsedRuns(ctx, now); err != nil {
			return err
		}
		for _, r := range lapsed {
			if coderun.RunStatus(r.Status) == coderun.RunStarting && r.Claims < maxClaims {
				err = tx.RequeueRun(ctx, r.ID, now, "its worker was lost before the program started; queued again")
				w.log.Warn("requeued a run whose worker was lost", "run", r.ID)
			} else {
				err = tx.FinishRun(ctx, r.ID, "", store.RunResult{
					Status: coderun.RunErrored, At: now, Reason: "the worker executing it was lost",
					Error: &coderun.ErrorDetail{Code: coderun.ErrWorkerLost, Message: "the worker executing the run was lost"},
				})
				w.log.Warn("a run's worker was lost", "run", r.ID)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.log.Error("recovering lapsed runs failed", "err", err)
		return
	}
	for _, r := range lapsed {
		w.opts.Events.RunChanged(r.ID)
	}
	w.removeOrphans(ctx)
}

// removeOrphans removes the sandboxes on the engine whose run is not active
// under a live lease: their worker is gone, or they outlived their run.
func (w *Worker) removeOrphans(ctx context.Context) {
	ids, err := w.exec.Sandboxes(ctx)
	if err != nil {
		w.log.Error("listing sandboxes failed", "err", err)
		return
	}
	if len(ids) == 0 {
		return
	}
	var live map[string]bool
	err = w.db.Read(ctx, func(tx *store.Tx) error {
		live, err = tx.LiveRuns(ctx, ids, w.now())
		return err
	})
	if err != nil {
		w.log.Error("checking sandboxes' runs failed", "err", err)
		return
	}
	for _, id := range ids {
		if live[id] || w.executing(id) {
			continue
		}
		if err := w.exec.Cleanup(ctx, id); err != nil {
			w.log.Error("removing an orphaned sandbox failed", "run", id, "err", err)
			continue
		}
		w.log.Warn("removed an orphaned sandbox", "run", id)
	}
}

func (w *Worker) executing(runID string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.running[runID]
	return ok
}
