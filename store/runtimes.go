package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gharart/coderun"
)

// runtimeRow is a runtimes row.
type runtimeRow struct {
	Handle                   string         `db:"handle"`
	Key                      string         `db:"runtime_key"`
	Image                    string         `db:"image"`
	Digest                   string         `db:"digest"`
	Command                  string         `db:"command"` // JSON array
	EntrypointFile           string         `db:"entrypoint_file"`
	TimeoutSeconds           int            `db:"timeout_seconds"`
	MemoryMiB                int            `db:"memory_mib"`
	CPUs                     float64        `db:"cpus"`
	Pids                     int            `db:"pids"`
	OutputBytes              int64          `db:"output_bytes"`
	Network                  bool           `db:"network"`
	Description              string         `db:"description"`
	ValidationStatus         string         `db:"validation_status"`
	ValidationCheckedAt      dbTime         `db:"validation_checked_at"`
	ValidationResolvedDigest sql.NullString `db:"validation_resolved_digest"`
	ValidationErrorCode      sql.NullString `db:"validation_error_code"`
	ValidationErrorMessage   sql.NullString `db:"validation_error_message"`
	CreatedAt                dbTime         `db:"created_at"`
	UpdatedAt                dbTime         `db:"updated_at"`
}

const runtimeColumns = `handle, runtime_key, image, digest, command, entrypoint_file,
	timeout_seconds, memory_mib, cpus, pids, output_bytes, network, description,
	validation_status, validation_checked_at, validation_resolved_digest,
	validation_error_code, validation_error_message, created_at, updated_at`

func newRuntimeRow(rt coderun.Runtime) (runtimeRow, error) {
	command := rt.Command
	if command == nil {
		command = []string{} // "[]", not "null"
	}
	commandJSON, err := json.Marshal(command)
	if err != nil {
		return runtimeRow{}, err
	}
	row := runtimeRow{
		Handle:              rt.Handle,
		Key:                 rt.Key,
		Image:               rt.Image,
		Digest:              rt.Digest,
		Command:             string(commandJSON),
		EntrypointFile:      rt.EntrypointFile,
		TimeoutSeconds:      rt.Limits.TimeoutSeconds,
		MemoryMiB:           rt.Limits.MemoryMiB,
		CPUs:                rt.Limits.CPUs,
		Pids:                rt.Limits.Pids,
		OutputBytes:         rt.Limits.OutputBytes,
		Network:             rt.Network,
		Description:         rt.Description,
		ValidationStatus:    string(rt.Validation.Status),
		ValidationCheckedAt: optionalTime(rt.Validation.CheckedAt),
		CreatedAt:           someTime(rt.CreatedAt),
		UpdatedAt:           someTime(rt.UpdatedAt),
	}
	if row.ValidationStatus == "" {
		row.ValidationStatus = string(coderun.ValidationPending) // never checked
	}
	if d := rt.Validation.ResolvedDigest; d != nil {
		row.ValidationResolvedDigest = sql.NullString{String: *d, Valid: true}
	}
	if e := rt.Validation.Error; e != nil {
		row.ValidationErrorCode = sql.NullString{String: e.Code, Valid: true}
		row.ValidationErrorMessage = sql.NullString{String: e.Message, Valid: true}
	}
	return row, nil
}

func (r runtimeRow) runtime() (coderun.Runtime, error) {
	rt := coderun.Runtime{
		Handle:         r.Handle,
		Key:            r.Key,
		Image:          r.Image,
		Digest:         r.Digest,
		EntrypointFile: r.EntrypointFile,
		Limits: coderun.Limits{
			TimeoutSeconds: r.TimeoutSeconds,
			MemoryMiB:      r.MemoryMiB,
			CPUs:           r.CPUs,
			Pids:           r.Pids,
			OutputBytes:    r.OutputBytes,
		},
		Network:     r.Network,
		Description: r.Description,
		Validation: coderun.Validation{
			Status:    coderun.ValidationStatus(r.ValidationStatus),
			CheckedAt: r.ValidationCheckedAt.ptr(),
		},
		CreatedAt: r.CreatedAt.Time,
		UpdatedAt: r.UpdatedAt.Time,
	}
	if err := json.Unmarshal([]byte(r.Command), &rt.Command); err != nil {
		return coderun.Runtime{}, fmt.Errorf("runtime %s/%s: stored command: %w", r.Handle, r.Key, err)
	}
	if r.ValidationResolvedDigest.Valid {
		rt.Validation.ResolvedDigest = &r.ValidationResolvedDigest.String
	}
	if r.ValidationErrorCode.Valid {
		rt.Validation.Error = &coderun.ErrorDetail{Code: r.ValidationErrorCode.String, Message: r.ValidationErrorMessage.String}
	}
	return rt, nil
}

// GetRuntime returns the runtime key of handle, or an ERuntimeNotFound.
func (tx *Tx) GetRuntime(ctx context.Context, handle, key string) (coderun.Runtime, error) {
	const q = `SELECT ` + runtimeColumns + ` FROM runtimes WHERE handle = ? AND runtime_key = ?`
	var row runtimeRow
	err := tx.get(ctx, &row, q, handle, key)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return coderun.Runtime{}, coderun.Errorf(coderun.ERuntimeNotFound, "runtime %q not found in handle %q", key, handle)
	case err != nil:
		return coderun.Runtime{}, fmt.Errorf("get runtime %s/%s: %w", handle, key, err)
	}
	return row.runtime()
}

// ListRuntimes returns up to limit runtimes of handle with key > afterKey,
// ordered by key (byte order, the same on both engines).
func (tx *Tx) ListRuntimes(ctx context.Context, handle, afterKey string, limit int) ([]coderun.Runtime, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list runtimes of %q: limit %d is not positive", handle, limit)
	}
	const q = `SELECT ` + runtimeColumns + ` FROM runtimes WHERE handle = ? AND runtime_key > ? ORDER BY runtime_key LIMIT ?`
	var rows []runtimeRow
	if err := tx.selectAll(ctx, &rows, q, handle, afterKey, limit); err != nil {
		return nil, fmt.Errorf("list runtimes of %q: %w", handle, err)
	}
	runtimes := make([]coderun.Runtime, 0, len(rows))
	for _, row := range rows {
		rt, err := row.runtime()
		if err != nil {
			return nil, err
		}
		runtimes = append(runtimes, rt)
	}
	return runtimes, nil
}

// PutRuntime inserts rt, or replaces every column of the stored runtime with
// the same handle and key except its created_at; created reports an insert.
// CreatedAt and UpdatedAt default to now. An unknown handle is an
// EHandleNotFound.
func (tx *Tx) PutRuntime(ctx context.Context, rt coderun.Runtime) (created bool, err error) {
	rt.CreatedAt = tx.orNow(rt.CreatedAt)
	rt.UpdatedAt = tx.orNow(rt.UpdatedAt)
	row, err := newRuntimeRow(rt)
	if err != nil {
		return false, fmt.Errorf("put runtime %s/%s: %w", rt.Handle, rt.Key, err)
	}

	// Insert first and update only on a clash: in PostgreSQL, ON CONFLICT DO
	// NOTHING waits for a concurrent insert of the same key, so two puts never
	// both insert, and the UPDATE then finds the row.
	const insert = `INSERT INTO runtimes (` + runtimeColumns + `) VALUES (
		:handle, :runtime_key, :image, :digest, :command, :entrypoint_file,
		:timeout_seconds, :memory_mib, :cpus, :pids, :output_bytes, :network, :description,
		:validation_status, :validation_checked_at, :validation_resolved_digest,
		:validation_error_code, :validation_error_message, :created_at, :updated_at)
		ON CONFLICT (handle, runtime_key) DO NOTHING`
	res, err := tx.execNamed(ctx, insert, row)
	if violation(err) == foreignKeyViolation {
		return false, coderun.Errorf(coderun.EHandleNotFound, "handle %q not found", rt.Handle)
	}
	if n, err := affected(res, err); err != nil {
		return false, fmt.Errorf("insert runtime %s/%s: %w", rt.Handle, rt.Key, err)
	} else if n == 1 {
		return true, nil
	}

	const update = `UPDATE runtimes SET
		image = :image, digest = :digest, command = :command, entrypoint_file = :entrypoint_file,
		timeout_seconds = :timeout_seconds, memory_mib = :memory_mib, cpus = :cpus, pids = :pids,
		output_bytes = :output_bytes, network = :network, description = :description,
		validation_status = :validation_status, validation_checked_at = :validation_checked_at,
		validation_resolved_digest = :validation_resolved_digest,
		validation_error_code = :validation_error_code, validation_error_message = :validation_error_message,
		updated_at = :updated_at
		WHERE handle = :handle AND runtime_key = :runtime_key`
	if n, err := affected(tx.execNamed(ctx, update, row)); err != nil {
		return false, fmt.Errorf("update runtime %s/%s: %w", rt.Handle, rt.Key, err)
	} else if n != 1 {
		return false, fmt.Errorf("update runtime %s/%s: %d rows changed, want 1", rt.Handle, rt.Key, n)
	}
	return false, nil
}

// ImageDigestsInUse returns the manifest digests that the runtimes of every
// handle declare and that the runs not yet finished start from: the images
// the engine must keep.
func (tx *Tx) ImageDigestsInUse(ctx context.Context) (map[string]bool, error) {
	const q = `SELECT digest FROM runtimes
		UNION SELECT image FROM runs WHERE status IN ('queued', 'starting', 'running')`
	var refs []string
	if err := tx.selectAll(ctx, &refs, q); err != nil {
		return nil, fmt.Errorf("image digests in use: %w", err)
	}
	inUse := make(map[string]bool, len(refs))
	for _, ref := range refs {
		// A run's image is name@digest (a local-only image's digest is its
		// id); a runtime's digest stands alone.
		if _, digest, ok := strings.Cut(ref, "@"); ok {
			ref = digest
		}
		inUse[ref] = true
	}
	return inUse, nil
}
