package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gharart/coderun"
)

// dayLayout names a UTC day in daily_writes.
const dayLayout = "2006-01-02"

// DailyWrites returns how many writes handle has made on the UTC day of at.
func (tx *Tx) DailyWrites(ctx context.Context, handle string, at time.Time) (int, error) {
	const q = `SELECT writes FROM daily_writes WHERE handle = ? AND day = ?`
	var n int
	err := tx.get(ctx, &n, q, handle, at.UTC().Format(dayLayout))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("daily writes of %q: %w", handle, err)
	}
	return n, nil
}

// AddDailyWrite counts one write of handle on the UTC day of at, and forgets
// the handle's earlier days.
func (tx *Tx) AddDailyWrite(ctx context.Context, handle string, at time.Time) error {
	day := at.UTC().Format(dayLayout)
	const add = `INSERT INTO daily_writes (handle, day, writes) VALUES (?, ?, 1)
		ON CONFLICT (handle, day) DO UPDATE SET writes = daily_writes.writes + 1`
	if _, err := tx.exec(ctx, add, handle, day); err != nil {
		return fmt.Errorf("count a write of %q: %w", handle, err)
	}
	if _, err := tx.exec(ctx, `DELETE FROM daily_writes WHERE handle = ? AND day < ?`, handle, day); err != nil {
		return fmt.Errorf("forget old daily writes of %q: %w", handle, err)
	}
	return nil
}

// IdempotentWrite is a write made with an Idempotency-Key, kept under
// (Handle, UserID, Key): first claimed, while it is in flight, then with its
// answer, so that a retry gets that answer again.
type IdempotentWrite struct {
	// Handle is "" for a write outside any handle.
	Handle, UserID, Key string
	// Fingerprint identifies the request; a retry must carry the same one.
	Fingerprint string
	// Claim names the attempt holding the key while it is in flight.
	Claim string
	// Status is the HTTP status the answer had; 0 while the write is in
	// flight.
	Status int
	// Result is the answer's domain object as JSON.
	Result []byte
	// CreatedAt is when the key was first claimed; ClaimedAt when its current
	// claim was taken.
	CreatedAt, ClaimedAt time.Time
}

// InFlight reports whether the write has no answer yet.
func (w IdempotentWrite) InFlight() bool { return w.Status == 0 }

// ClaimIdempotentWrite claims w's key for the attempt w.Claim. claimed is
// true when the key was free: no write used it since expiredBefore, or its
// last claim was taken before abandonedBefore and never answered (its attempt
// died). Otherwise kept is the write that holds the key, in flight or
// answered. The handle's keys created before expiredBefore are dropped.
func (tx *Tx) ClaimIdempotentWrite(ctx context.Context, w IdempotentWrite, expiredBefore, abandonedBefore time.Time) (kept IdempotentWrite, claimed bool, err error) {
	const reap = `DELETE FROM idempotency_keys WHERE handle = ? AND created_at < ?`
	if _, err := tx.exec(ctx, reap, w.Handle, someTime(expiredBefore)); err != nil {
		return kept, false, fmt.Errorf("drop expired idempotency keys of %q: %w", w.Handle, err)
	}
	now := tx.orNow(w.CreatedAt)
	const insert = `INSERT INTO idempotency_keys (handle, user_id, idem_key, fingerprint, claim, status, result, created_at, claimed_at)
		VALUES (?, ?, ?, ?, ?, 0, NULL, ?, ?) ON CONFLICT (handle, user_id, idem_key) DO NOTHING`
	res, err := tx.exec(ctx, insert, w.Handle, w.UserID, w.Key, w.Fingerprint, w.Claim, someTime(now), someTime(now))
	if err != nil {
		return kept, false, fmt.Errorf("claim idempotency key of %q in %q: %w", w.UserID, w.Handle, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return kept, err == nil, err
	}
	const q = `SELECT fingerprint, claim, status, result, created_at, claimed_at FROM idempotency_keys
		WHERE handle = ? AND user_id = ? AND idem_key = ?`
	var result sql.NullString
	var created, claimedAt dbTime
	err = tx.queryRow(ctx, q, w.Handle, w.UserID, w.Key).Scan(&kept.Fingerprint, &kept.Claim, &kept.Status, &result, &created, &claimedAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// The attempt holding the key failed and released it between our
		// insert and this read: it was in flight a moment ago.
		return IdempotentWrite{Handle: w.Handle, UserID: w.UserID, Key: w.Key, Fingerprint: w.Fingerprint}, false, nil
	case err != nil:
		return kept, false, fmt.Errorf("idempotency key of %q in %q: %w", w.UserID, w.Handle, err)
	}
	kept.Handle, kept.UserID, kept.Key, kept.Result = w.Handle, w.UserID, w.Key, []byte(result.String)
	kept.CreatedAt, kept.ClaimedAt = created.Time, claimedAt.Time
	if !kept.InFlight() || kept.Fingerprint != w.Fingerprint || !kept.ClaimedAt.Before(abandonedBefore) {
		return kept, false, nil
	}
	// Take over an abandoned claim; of two attempts doing so at once, one wins.
	const takeOver = `UPDATE idempotency_keys SET claim = ?, claimed_at = ?
		WHERE handle = ? AND user_id = ? AND idem_key = ? AND claim = ? AND status = 0`
	res, err = tx.exec(ctx, takeOver, w.Claim, someTime(now), w.Handle, w.UserID, w.Key, kept.Claim)
	if err != nil {
		return kept, false, fmt.Errorf("take over idempotency key of %q in %q: %w", w.UserID, w.Handle, err)
	}
	n, err := res.RowsAffected()
	return kept, err == nil && n == 1, err
}

// FinishIdempotentWrite keeps w's answer (Status and Result) under its key.
// It fails when w.Claim no longer holds the key: the attempt was taken for
// dead and another took over, so this one must not write.
func (tx *Tx) FinishIdempotentWrite(ctx context.Context, w IdempotentWrite) error {
	const q = `UPDATE idempotency_keys SET status = ?, result = ?
		WHERE handle = ? AND user_id = ? AND idem_key = ? AND claim = ? AND status = 0`
	return tx.byClaim(ctx, w, "keep the answer under", q, w.Status, string(w.Result))
}

// HoldIdempotentWrite renews w's claim on its key, as of at, inside the write
// the key protects. It fails, as FinishIdempotentWrite does, when w.Claim no
// longer holds the key.
func (tx *Tx) HoldIdempotentWrite(ctx context.Context, w IdempotentWrite, at time.Time) error {
	const q = `UPDATE idempotency_keys SET claimed_at = ?
		WHERE handle = ? AND user_id = ? AND idem_key = ? AND claim = ? AND status = 0`
	return tx.byClaim(ctx, w, "hold", q, someTime(at))
}

// byClaim runs q, an update of w's key while w.Claim holds it in flight, with
// set followed by the key and the claim as its arguments. It fails with
// EIdempotencyKeyInUse when no row changed: w.Claim was taken over.
func (tx *Tx) byClaim(ctx context.Context, w IdempotentWrite, what, q string, set ...any) error {
	res, err := tx.exec(ctx, q, append(set, w.Handle, w.UserID, w.Key, w.Claim)...)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	switch {
	case err != nil:
		return fmt.Errorf("%s idempotency key of %q in %q: %w", what, w.UserID, w.Handle, err)
	case n != 1:
		e := coderun.Errorf(coderun.EIdempotencyKeyInUse, "this attempt took so long that a retry with Idempotency-Key %q took over; its answer is the one kept", w.Key)
		e.RetryAfter = time.Second
		return e
	}
	return nil
}

// ReleaseIdempotentWrite frees w's key when w.Claim still holds it and no
// answer was kept: the attempt failed, so a retry may write afresh.
func (tx *Tx) ReleaseIdempotentWrite(ctx context.Context, w IdempotentWrite) error {
	const q = `DELETE FROM idempotency_keys WHERE handle = ? AND user_id = ? AND idem_key = ? AND claim = ? AND status = 0`
	if _, err := tx.exec(ctx, q, w.Handle, w.UserID, w.Key, w.Claim); err != nil {
		return fmt.Errorf("release idempotency key of %q in %q: %w", w.UserID, w.Handle, err)
	}
	return nil
}

// ForgetIdempotentWrites drops the keys of every handle created before
// before, answered or not; it returns how many. A handle's own keys are also
// dropped as it claims one, but a handle that stops writing keeps its keys
// until this runs.
func (tx *Tx) ForgetIdempotentWrites(ctx context.Context, before time.Time) (int64, error) {
	res, err := tx.exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < ?`, someTime(before))
	if err != nil {
		return 0, fmt.Errorf("forget idempotency keys: %w", err)
	}
	return res.RowsAffected()
}
