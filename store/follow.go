package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/gharart/coderun"
)

// What followers of a run read: they are told only that a run changed, and
// read here what is new since they last looked. These reads take a run id
// alone; the caller has authorized the follower already.

// NumberedTransition is a transition with its place in the run's history
// (1, 2, 3, …).
type NumberedTransition struct {
	Seq int64
	coderun.Transition
}

// RunChanges is what a run has recorded after a follower's position.
type RunChanges struct {
	Status   coderun.RunStatus
	ExitCode *int
	Error    *coderun.ErrorDetail
	// LastSeq is the seq of the last chunk the run had stored when Status was
	// read. Once Status is terminal it is the run's last chunk.
	LastSeq int64
	// Transitions are those after the position asked for, in order.
	Transitions []NumberedTransition
	// Chunks are up to the number asked for after the seq asked for, in order.
	Chunks []coderun.OutputChunk
}

// RunChanges reads the status of runID, its transitions with seq >
// afterTransition (none when it is negative) and up to maxChunks (0: all;
// none when negative) of its chunks with seq > afterSeq, or an ERunNotFound. A run stores every chunk before its terminal
// status, so a terminal Status guarantees every chunk up to LastSeq is
// readable.
func (db *DB) RunChanges(ctx context.Context, runID string, afterTransition, afterSeq int64, maxChunks int) (RunChanges, error) {
	var c RunChanges
	err := db.Read(ctx, func(tx *Tx) error {
		// One snapshot (see Read): a terminal status comes with its terminal
		// transition, its exit code and every chunk up to LastSeq.
		var transitions []NumberedTransition
		if afterTransition >= 0 {
			var err error
			if transitions, err = tx.transitionsAfter(ctx, runID, afterTransition); err != nil {
				return err
			}
		}
		var row struct {
			Status       string         `db:"status"`
			ExitCode     sql.NullInt64  `db:"exit_code"`
			ErrorCode    sql.NullString `db:"error_code"`
			ErrorMessage sql.NullString `db:"error_message"`
			LastSeq      int64          `db:"last_seq"`
		}
		const q = `SELECT status, exit_code, error_code, error_message, last_seq FROM runs WHERE id = ?`
		switch err := tx.get(ctx, &row, q, runID); {
		case errors.Is(err, sql.ErrNoRows):
			return coderun.Errorf(coderun.ERunNotFound, "run %q not found", runID)
		case err != nil:
			return fmt.Errorf("read status of %s: %w", runID, err)
		}
		c = RunChanges{Status: coderun.RunStatus(row.Status), LastSeq: row.LastSeq, Transitions: transitions}
		if row.ExitCode.Valid {
			code := int(row.ExitCode.Int64)
			c.ExitCode = &code
		}
		if row.ErrorCode.Valid {
			c.Error = &coderun.ErrorDetail{Code: row.ErrorCode.String, Message: row.ErrorMessage.String}
		}
		if maxChunks < 0 {
			return nil
		}
		var err error
		c.Chunks, err = tx.Output(ctx, runID, afterSeq, maxChunks)
		return err
	})
	return c, err
}

func (tx *Tx) transitionsAfter(ctx context.Context, runID string, after int64) ([]NumberedTransition, error) {
	const q = `SELECT seq, status, at, reason FROM run_transitions WHERE run_id = ? AND seq > ? ORDER BY seq`
	var rows []struct {
		Seq    int64  `db:"seq"`
		Status string `db:"status"`
		At     dbTime `db:"at"`
		Reason string `db:"reason"`
	}
	if err := tx.selectAll(ctx, &rows, q, runID, after); err != nil {
		return nil, fmt.Errorf("read transitions of %s: %w", runID, err)
	}
	ts := make([]NumberedTransition, len(rows))
	for i, r := range rows {
		ts[i] = NumberedTransition{Seq: r.Seq, Transition: coderun.Transition{Status: coderun.RunStatus(r.Status), At: r.At.Time, Reason: r.Reason}}
	}
	return ts, nil
}

// NotifyRunChanged tells every PostgreSQL session listening on channel that
// runID changed. The payload is the id alone: listeners read the rows.
func (db *DB) NotifyRunChanged(ctx context.Context, channel, runID string) error {
	if db.d.name != postgresDialect.name {
		return fmt.Errorf("notify %s: LISTEN/NOTIFY needs PostgreSQL, not %s", channel, db.d.name)
	}
	if _, err := db.rw.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, runID); err != nil {
		return fmt.Errorf("notify %s of %s: %w", channel, runID, err)
	}
	return nil
}
