package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/gharart/coderun"
)

// runRow is a runs row.
type runRow struct {
	ID                string         `db:"id"`
	Handle            string         `db:"handle"`
	RuntimeKey        string         `db:"runtime_key"`
	Image             string         `db:"image"`
	Command           string         `db:"command"`
	Network           bool           `db:"network"`
	TimeoutSeconds    int            `db:"timeout_seconds"`
	MemoryMiB         int            `db:"memory_mib"`
	CPUs              float64        `db:"cpus"`
	Pids              int            `db:"pids"`
	OutputBytes       int64          `db:"output_bytes"`
	Labels            string         `db:"labels"`
	Status            string         `db:"status"`
	ExitCode          sql.NullInt64  `db:"exit_code"`
	ErrorCode         sql.NullString `db:"error_code"`
	ErrorMessage      sql.NullString `db:"error_message"`
	CreatedAt         dbTime         `db:"created_at"`
	StartedAt         dbTime         `db:"started_at"`
	FinishedAt        dbTime         `db:"finished_at"`
	StdoutBytes       int64          `db:"stdout_bytes"`
	StderrBytes       int64          `db:"stderr_bytes"`
	Truncated         bool           `db:"truncated"`
	LastSeq           int64          `db:"last_seq"`
	WorkerID          sql.NullString `db:"worker_id"`
	LeaseExpiresAt    dbTime         `db:"lease_expires_at"`
	Claims            int            `db:"claims"`
	CancelRequestedAt dbTime         `db:"cancel_requested_at"`
}

const runColumns = `id, handle, runtime_key, image, command, network, timeout_seconds,
	memory_mib, cpus, pids, output_bytes, labels, status, exit_code, error_code,
	error_message, created_at, started_at, finished_at, stdout_bytes, stderr_bytes,
	truncated, last_seq, worker_id, lease_expires_at, claims, cancel_requested_at`

func (r runRow) run() (coderun.Run, error) {
	run := coderun.Run{
		ID:         r.ID,
		Handle:     r.Handle,
		RuntimeKey: r.RuntimeKey,
		Image:      r.Image,
		Status:     coderun.RunStatus(r.Status),
		Limits: coderun.Limits{
			TimeoutSeconds: r.TimeoutSeconds, MemoryMiB: r.MemoryMiB, CPUs: r.CPUs, Pids: r.Pids, OutputBytes: r.OutputBytes,
		},
		CreatedAt:  r.CreatedAt.Time,
		StartedAt:  r.StartedAt.ptr(),
		FinishedAt: r.FinishedAt.ptr(),
		Output:     coderun.OutputSummary{StdoutBytes: r.StdoutBytes, StderrBytes: r.StderrBytes, Truncated: r.Truncated},
	}
	if r.ExitCode.Valid {
		code := int(r.ExitCode.Int64)
		run.ExitCode = &code
	}
	if r.ErrorCode.Valid {
		run.Error = &coderun.ErrorDetail{Code: r.ErrorCode.String, Message: r.ErrorMessage.String}
	}
	if run.StartedAt != nil && run.FinishedAt != nil {
		ms := run.FinishedAt.Sub(*run.StartedAt).Milliseconds()
		run.DurationMs = &ms
	}
	if err := json.Unmarshal([]byte(r.Labels), &run.Labels); err != nil {
		return run, fmt.Errorf("run %s: stored labels: %w", r.ID, err)
	}
	return run, nil
}

// CreateRun inserts a queued run, its first transition and its input.
func (tx *Tx) CreateRun(ctx context.Context, run coderun.Run, job coderun.RunJob) error {
	labels, err := json.Marshal(nonNilMap(run.Labels))
	if err != nil {
		return err
	}
	command, err := json.Marshal(nonNilSlice(job.Command))
	if err != nil {
		return err
	}
	const insert = `INSERT INTO runs (id, handle, runtime_key, image, command, network, timeout_seconds,
		memory_mib, cpus, pids, output_bytes, labels, status, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	l := run.Limits
	_, err = tx.exec(ctx, insert, run.ID, run.Handle, run.RuntimeKey, run.Image, string(command), job.Network,
		l.TimeoutSeconds, l.MemoryMiB, l.CPUs, l.Pids, l.OutputBytes, string(labels), string(coderun.RunQueued), someTime(run.CreatedAt))
	if violation(err) == foreignKeyViolation {
		return coderun.Errorf(coderun.EHandleNotFound, "handle %q not found", run.Handle)
	}
	if err != nil {
		return fmt.Errorf("insert run: %w", err)
	}
	for _, t := range run.Transitions {
		if err := tx.addTransition(ctx, run.ID, t); err != nil {
			return err
		}
	}
	files, err := json.Marshal(nonNilSlice(job.Files))
	if err != nil {
		return err
	}
	env, err := json.Marshal(nonNilMap(job.Env))
	if err != nil {
		return err
	}
	args, err := json.Marshal(nonNilSlice(job.Args))
	if err != nil {
		return err
	}
	stdin := job.Stdin
	if stdin == nil {
		stdin = []byte{}
	}
	const input = `INSERT INTO run_inputs (run_id, files, stdin, env, args) VALUES (?, ?, ?, ?, ?)`
	if _, err := tx.exec(ctx, input, run.ID, string(files), stdin, string(env), string(args)); err != nil {
		return fmt.Errorf("insert run input: %w", err)
	}
	return nil
}

func (tx *Tx) addTransition(ctx context.Context, runID string, t coderun.Transition) error {
	const q = `INSERT INTO run_transitions (run_id, seq, status, at, reason)
		SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM run_transitions WHERE run_id = ?`
	if _, err := tx.exec(ctx, q, runID, string(t.Status), someTime(t.At), t.Reason, runID); err != nil {
		return fmt.Errorf("record transition of %s: %w", runID, err)
	}
	return nil
}

// GetRun returns run runID of handle with its transitions, or an ERunNotFound.
func (tx *Tx) GetRun(ctx context.Context, handle, runID string) (coderun.Run, error) {
	const q = `SELECT ` + runColumns + ` FROM runs WHERE id = ? AND handle = ?`
	var row runRow
	err := tx.get(ctx, &row, q, runID, handle)
	if errors.Is(err, sql.ErrNoRows) {
		return coderun.Run{}, coderun.Errorf(coderun.ERunNotFound, "run %q not found in handle %q", runID, handle)
	}
	if err != nil {
		return coderun.Run{}, fmt.Errorf("get run %s: %w", runID, err)
	}
	runs, err := tx.withTransitions(ctx, []runRow{row})
	if err != nil {
		return coderun.Run{}, err
	}
	return runs[0], nil
}

// ListRuns returns up to limit runs of handle with id < beforeID ("" = from
// the newest), newest first, restricted to statuses when any are given.
func (tx *Tx) ListRuns(ctx context.Context, handle string, statuses []coderun.RunStatus, beforeID string, limit int) ([]coderun.Run, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list runs of %q: limit %d is not positive", handle, limit)
	}
	q := `SELECT ` + runColumns + ` FROM runs WHERE handle = ?`
	args := []any{handle}
	if beforeID != "" {
		q += ` AND id < ?`
		args = append(args, beforeID)
	}
	if len(statuses) > 0 {
		q += ` AND status IN (?` + strings.Repeat(", ?", len(statuses)-1) + `)`
		for _, s := range statuses {
			args = append(args, string(s))
		}
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	var rows []runRow
	if err := tx.selectAll(ctx, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("list runs of %q: %w", handle, err)
	}
	return tx.withTransitions(ctx, rows)
}

// withTransitions turns rows into runs and reads all their transitions in one query.
func (tx *Tx) withTransitions(ctx context.Context, rows []runRow) ([]coderun.Run, error) {
	runs := make([]coderun.Run, len(rows))
	if len(rows) == 0 {
		return runs, nil
	}
	index := make(map[string]int, len(rows))
	ids := make([]string, len(rows))
	for i, row := range rows {
		run, err := row.run()
		if err != nil {
			return nil, err
		}
		run.Transitions = []coderun.Transition{}
		runs[i], index[row.ID], ids[i] = run, i, row.ID
	}
	q, args, err := sqlx.In(`SELECT run_id, status, at, reason FROM run_transitions WHERE run_id IN (?) ORDER BY run_id, seq`, ids)
	if err != nil {
		return nil, err
	}
	var ts []struct {
		RunID  string `db:"run_id"`
		Status string `db:"status"`
		At     dbTime `db:"at"`
		Reason string `db:"reason"`
	}
	if err := tx.selectAll(ctx, &ts, q, args...); err != nil {
		return nil, fmt.Errorf("read transitions: %w", err)
	}
	for _, t := range ts {
		i := index[t.RunID]
		runs[i].Transitions = append(runs[i].Transitions, coderun.Transition{Status: coderun.RunStatus(t.Status), At: t.At.Time, Reason: t.Reason})
	}
	return runs, nil
}

// CountActiveRuns counts handle's runs that are queued, starting or running.
func (tx *Tx) CountActiveRuns(ctx context.Context, handle string) (int, error) {
	const q = `SELECT COUNT(*) FROM runs WHERE handle = ? AND status IN ('queued', 'starting', 'running')`
	var n int
	if err := tx.get(ctx, &n, q, handle); err != nil {
		return 0, fmt.Errorf("count active runs of %q: %w", handle, err)
	}
	return n, nil
}

// FinishQueuedRun moves a run that is still queued straight to a terminal
// status (a cancel before any worker took it).
func (tx *Tx) FinishQueuedRun(ctx context.Context, runID string, status coderun.RunStatus, at time.Time, reason string) error {
	const q = `UPDATE runs SET status = ?, finished_at = ? WHERE id = ? AND status = 'queued'`
	n, err := affected(tx.exec(ctx, q, string(status), someTime(at), runID))
	if err != nil {
		return fmt.Errorf("finish queued run %s: %w", runID, err)
	}
	if n == 0 {
		return coderun.Errorf(coderun.EConflict, "run %s is no longer queued", runID)
	}
	if err := tx.addTransition(ctx, runID, coderun.Transition{Status: status, At: at, Reason: reason}); err != nil {
		return err
	}
	return tx.deleteInput(ctx, runID)
}

// RequestCancel marks an active run to be stopped by the worker holding it.
func (tx *Tx) RequestCancel(ctx context.Context, runID string, at time.Time) error {
	const q = `UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) WHERE id = ?`
	if _, err := tx.exec(ctx, q, someTime(at), runID); err != nil {
		return fmt.Errorf("request cancel of %s: %w", runID, err)
	}
	return nil
}

func (tx *Tx) deleteInput(ctx context.Context, runID string) error {
	if _, err := tx.exec(ctx, `DELETE FROM run_inputs WHERE run_id = ?`, runID); err != nil {
		return fmt.Errorf("delete input of %s: %w", runID, err)
	}
	return nil
}

// Output returns up to limit (0: all) chunks of runID with seq > afterSeq, in order.
func (tx *Tx) Output(ctx context.Context, runID string, afterSeq int64, limit int) ([]coderun.OutputChunk, error) {
	q := `SELECT seq, stream, data, at FROM run_output WHERE run_id = ? AND seq > ? ORDER BY seq`
	args := []any{runID, afterSeq}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	var rows []struct {
		Seq    int64  `db:"seq"`
		Stream string `db:"stream"`
		Data   []byte `db:"data"`
		At     dbTime `db:"at"`
	}
	if err := tx.selectAll(ctx, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("read output of %s: %w", runID, err)
	}
	chunks := make([]coderun.OutputChunk, len(rows))
	for i, r := range rows {
		chunks[i] = coderun.OutputChunk{Seq: r.Seq, Stream: coderun.Stream(r.Stream), Data: r.Data, At: r.At.Time}
	}
	return chunks, nil
}

func nonNilMap[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
