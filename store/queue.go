package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gharart/coderun"
)

// The run queue: workers claim queued runs under a lease that they renew while
// the run lives; a run whose lease lapses belongs to a worker that is gone.

// ClaimRun takes the oldest queued run for workerID, leased until leaseUntil,
// and moves it to starting. ok is false when nothing is queued. On PostgreSQL
// concurrent claimers skip each other's rows (SKIP LOCKED); on SQLite the
// write transaction holds the database.
func (tx *Tx) ClaimRun(ctx context.Context, workerID string, at, leaseUntil time.Time) (job coderun.RunJob, ok bool, err error) {
	q := `SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1` + tx.db.d.skipLocked
	var id string
	switch err := tx.get(ctx, &id, q); {
	case errors.Is(err, sql.ErrNoRows):
		return job, false, nil
	case err != nil:
		return job, false, fmt.Errorf("find a queued run: %w", err)
	}
	const claim = `UPDATE runs SET status = 'starting', worker_id = ?, lease_expires_at = ?, claims = claims + 1
		WHERE id = ? AND status = 'queued'`
	if _, err := tx.exec(ctx, claim, workerID, someTime(leaseUntil), id); err != nil {
		return job, false, fmt.Errorf("claim run %s: %w", id, err)
	}
	if err := tx.addTransition(ctx, id, coderun.Transition{Status: coderun.RunStarting, At: at, Reason: "claimed by worker " + workerID}); err != nil {
		return job, false, err
	}
	job, err = tx.runJob(ctx, id)
	return job, err == nil, err
}

// runJob reads what a worker needs to execute run id.
func (tx *Tx) runJob(ctx context.Context, id string) (coderun.RunJob, error) {
	const q = `SELECT ` + runColumns + `, i.files, i.stdin, i.env, i.args
		FROM runs JOIN run_inputs i ON i.run_id = runs.id WHERE runs.id = ?`
	var row struct {
		runRow
		Files string `db:"files"`
		Stdin []byte `db:"stdin"`
		Env   string `db:"env"`
		Args  string `db:"args"`
	}
	if err := tx.get(ctx, &row, q, id); err != nil {
		return coderun.RunJob{}, fmt.Errorf("read job of run %s: %w", id, err)
	}
	run, err := row.run()
	if err != nil {
		return coderun.RunJob{}, err
	}
	job := coderun.RunJob{RunID: run.ID, Handle: run.Handle, Image: run.Image, Network: row.Network, Limits: run.Limits, Stdin: row.Stdin}
	for _, f := range []struct {
		src string
		dst any
	}{{row.Command, &job.Command}, {row.Args, &job.Args}, {row.Files, &job.Files}, {row.Env, &job.Env}} {
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return coderun.RunJob{}, fmt.Errorf("read job of run %s: %w", id, err)
		}
	}
	return job, nil
}

// ErrLeaseLost is returned to a worker whose run is no longer its own: the
// lease lapsed and the run was recovered, or the run was finished elsewhere.
var ErrLeaseLost = errors.New("lease lost")

// RenewLease extends workerID's lease on runID and reports whether a cancel
// has been asked for.
func (tx *Tx) RenewLease(ctx context.Context, runID, workerID string, until time.Time) (cancelRequested bool, err error) {
	const q = `UPDATE runs SET lease_expires_at = ? WHERE id = ? AND worker_id = ? AND status IN ('starting', 'running')`
	n, err := affected(tx.exec(ctx, q, someTime(until), runID, workerID))
	if err != nil {
		return false, fmt.Errorf("renew lease of %s: %w", runID, err)
	}
	if n == 0 {
		return false, ErrLeaseLost
	}
	var requested dbTime
	if err := tx.get(ctx, &requested, `SELECT cancel_requested_at FROM runs WHERE id = ?`, runID); err != nil {
		return false, fmt.Errorf("read cancel request of %s: %w", runID, err)
	}
	return requested.Valid, nil
}

// MarkRunning records that workerID's run has started.
func (tx *Tx) MarkRunning(ctx context.Context, runID, workerID string, at time.Time) error {
	const q = `UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND worker_id = ? AND status = 'starting'`
	n, err := affected(tx.exec(ctx, q, someTime(at), runID, workerID))
	if err != nil {
		return fmt.Errorf("mark %s running: %w", runID, err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return tx.addTransition(ctx, runID, coderun.Transition{Status: coderun.RunRunning, At: at, Reason: "container started"})
}

// AppendOutput stores the next chunk of workerID's run; its Seq must follow
// the last one stored.
func (tx *Tx) AppendOutput(ctx context.Context, runID, workerID string, c coderun.OutputChunk) error {
	stdout, stderr := int64(0), int64(0)
	if c.Stream == coderun.Stdout {
		stdout = int64(len(c.Data))
	} else {
		stderr = int64(len(c.Data))
	}
	const q = `UPDATE runs SET last_seq = ?, stdout_bytes = stdout_bytes + ?, stderr_bytes = stderr_bytes + ?
		WHERE id = ? AND worker_id = ? AND last_seq = ? AND status IN ('starting', 'running')`
	n, err := affected(tx.exec(ctx, q, c.Seq, stdout, stderr, runID, workerID, c.Seq-1))
	if err != nil {
		return fmt.Errorf("count output of %s: %w", runID, err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	const insert = `INSERT INTO run_output (run_id, seq, stream, data, at) VALUES (?, ?, ?, ?, ?)`
	if _, err := tx.exec(ctx, insert, runID, c.Seq, string(c.Stream), c.Data, someTime(c.At)); err != nil {
		return fmt.Errorf("store output of %s: %w", runID, err)
	}
	return nil
}

// RunResult is how a run ended, as a worker records it.
type RunResult struct {
	Status    coderun.RunStatus
	ExitCode  *int
	Error     *coderun.ErrorDetail
	Truncated bool
	At        time.Time
	Reason    string
}

// FinishRun records the terminal status of an active run. With a workerID, it
// finishes only a run that worker still holds (else ErrLeaseLost); without
// one, any active run (recovery).
func (tx *Tx) FinishRun(ctx context.Context, runID, workerID string, r RunResult) error {
	if !r.Status.Terminal() {
		return fmt.Errorf("finish run %s: %s is not a terminal status", runID, r.Status)
	}
	var code, message sql.NullString
	if r.Error != nil {
		code = sql.NullString{String: r.Error.Code, Valid: true}
		message = sql.NullString{String: r.Error.Message, Valid: true}
	}
	var exit sql.NullInt64
	if r.ExitCode != nil {
		exit = sql.NullInt64{Int64: int64(*r.ExitCode), Valid: true}
	}
	q := `UPDATE runs SET status = ?, exit_code = ?, error_code = ?, error_message = ?, truncated = ?,
		finished_at = ?, worker_id = NULL, lease_expires_at = NULL
		WHERE id = ? AND status IN ('queued', 'starting', 'running')`
	args := []any{string(r.Status), exit, code, message, r.Truncated, someTime(r.At), runID}
	if workerID != "" {
		q += ` AND worker_id = ?`
		args = append(args, workerID)
	}
	n, err := affected(tx.exec(ctx, q, args...))
	if err != nil {
		return fmt.Errorf("finish run %s: %w", runID, err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	if err := tx.addTransition(ctx, runID, coderun.Transition{Status: r.Status, At: r.At, Reason: r.Reason}); err != nil {
		return err
	}
	return tx.deleteInput(ctx, runID)
}

// LapsedRun is an active run whose worker's lease has run out.
type LapsedRun struct {
	ID     string `db:"id"`
	Status string `db:"status"`
	// Claims counts the times workers took the run.
	Claims int `db:"claims"`
}

// LapsedRuns returns the active runs whose lease expired before at.
func (tx *Tx) LapsedRuns(ctx context.Context, at time.Time) ([]LapsedRun, error) {
	const q = `SELECT id, status, claims FROM runs
		WHERE status IN ('starting', 'running') AND lease_expires_at < ? ORDER BY id`
	var runs []LapsedRun
	if err := tx.selectAll(ctx, &runs, q, someTime(at)); err != nil {
		return nil, fmt.Errorf("find lapsed runs: %w", err)
	}
	return runs, nil
}

// RequeueRun puts a lapsed run that never started back in the queue.
func (tx *Tx) RequeueRun(ctx context.Context, runID string, at time.Time, reason string) error {
	const q = `UPDATE runs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL
		WHERE id = ? AND status = 'starting'`
	n, err := affected(tx.exec(ctx, q, runID))
	if err != nil {
		return fmt.Errorf("requeue run %s: %w", runID, err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return tx.addTransition(ctx, runID, coderun.Transition{Status: coderun.RunQueued, At: at, Reason: reason})
}

// LiveRuns returns which of ids are active runs under a lease that has not
// run out at at: their sandboxes are in use.
func (tx *Tx) LiveRuns(ctx context.Context, ids []string, at time.Time) (map[string]bool, error) {
	live := map[string]bool{}
	if len(ids) == 0 {
		return live, nil
	}
	q, args, err := sqlx.In(`SELECT id FROM runs WHERE id IN (?) AND status IN ('starting', 'running') AND lease_expires_at >= ?`, ids, someTime(at))
	if err != nil {
		return nil, err
	}
	var found []string
	if err := tx.selectAll(ctx, &found, q, args...); err != nil {
		return nil, fmt.Errorf("find live runs: %w", err)
	}
	for _, id := range found {
		live[id] = true
	}
	return live, nil
}
