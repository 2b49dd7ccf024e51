package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
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

// IdempotentWrite is the answer to a write made with an Idempotency-Key, kept
// under (Handle, UserID, Key) so that a retry gets it again.
type IdempotentWrite struct {
	Handle, UserID, Key string
	// Fingerprint identifies the request; a retry must carry the same one.
	Fingerprint string
	// Status is the HTTP status the first answer had.
	Status int
	// Result is the answer's domain object as JSON.
	Result    []byte
	CreatedAt time.Time
}

// IdempotentWrite returns the write userID made in handle with key at or after
// notBefore; found is false when there is none.
func (tx *Tx) IdempotentWrite(ctx context.Context, handle, userID, key string, notBefore time.Time) (w IdempotentWrite, found bool, err error) {
	const q = `SELECT fingerprint, status, result, created_at FROM idempotency_keys
		WHERE handle = ? AND user_id = ? AND idem_key = ? AND created_at >= ?`
	var result string
	var created dbTime
	err = tx.queryRow(ctx, q, handle, userID, key, someTime(notBefore)).Scan(&w.Fingerprint, &w.Status, &result, &created)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return IdempotentWrite{}, false, nil
	case err != nil:
		return IdempotentWrite{}, false, fmt.Errorf("idempotency key of %q in %q: %w", userID, handle, err)
	}
	w.Handle, w.UserID, w.Key, w.Result, w.CreatedAt = handle, userID, key, []byte(result), created.Time
	return w, true, nil
}

// SaveIdempotentWrite keeps w, first dropping the handle's keys created before
// expiredBefore (among them an expired one w may reuse).
func (tx *Tx) SaveIdempotentWrite(ctx context.Context, w IdempotentWrite, expiredBefore time.Time) error {
	const reap = `DELETE FROM idempotency_keys WHERE handle = ? AND created_at < ?`
	if _, err := tx.exec(ctx, reap, w.Handle, someTime(expiredBefore)); err != nil {
		return fmt.Errorf("drop expired idempotency keys of %q: %w", w.Handle, err)
	}
	const insert = `INSERT INTO idempotency_keys (handle, user_id, idem_key, fingerprint, status, result, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`
	_, err := tx.exec(ctx, insert, w.Handle, w.UserID, w.Key, w.Fingerprint, w.Status, string(w.Result), someTime(tx.orNow(w.CreatedAt)))
	if err != nil {
		return fmt.Errorf("save idempotency key of %q in %q: %w", w.UserID, w.Handle, err)
	}
	return nil
}
