package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// idempotencyRetention is how long a write's answer stays replayable.
const idempotencyRetention = 24 * time.Hour

// IdempotencyKey is the caller's name for one write, so that retrying it
// (after a timeout, say) answers the first attempt again instead of writing
// twice. "" means the caller gave none.
type IdempotencyKey string

// validate checks the key is 1–255 printable ASCII characters (or absent).
func (k IdempotencyKey) validate() error {
	if k == "" {
		return nil
	}
	ok := len(k) <= 255
	for i := 0; ok && i < len(k); i++ {
		ok = k[i] >= 0x20 && k[i] < 0x7f
	}
	if ok {
		return nil
	}
	e := coderun.Errorf(coderun.EInvalidRequest, "Idempotency-Key must be 1 to 255 printable ASCII characters")
	e.Fields = []coderun.FieldError{{Field: "Idempotency-Key", Code: "invalid", Message: e.Message}}
	return e
}

// outcome is how a write was answered, as the HTTP status REST gives it; it is
// kept with an idempotent write so that a replay answers the same way.
type outcome int

const (
	outcomeOK       outcome = 200
	outcomeCreated  outcome = 201
	outcomeAccepted outcome = 202
)

// write is one write as access, the daily limit and idempotency see it.
type write struct {
	handle string
	// scope and role are what the caller needs to make it.
	scope coderun.Scope
	role  coderun.Role
	key   IdempotencyKey
	// op and input identify the request: a retry with the same key must repeat
	// both (input holds the path's values and the body).
	op    string
	input any
}

// fingerprint is a digest of the write's operation and canonical input (JSON
// sorts map keys, so equal inputs encode equally).
func (w write) fingerprint() (string, error) {
	b, err := json.Marshal(struct {
		Op    string `json:"op"`
		Input any    `json:"input"`
	}{w.op, w.input})
	if err != nil {
		return "", fmt.Errorf("fingerprint %s: %w", w.op, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// replay looks for an answer kept under w's key: found is true when result
// was filled from it. The same key on another request is an error.
func (s *Service) replay(ctx context.Context, tx *store.Tx, p *coderun.Principal, w write, result any) (found bool, o outcome, err error) {
	if w.key == "" {
		return false, 0, nil
	}
	kept, found, err := tx.IdempotentWrite(ctx, w.handle, p.UserID, string(w.key), s.now().Add(-idempotencyRetention))
	if err != nil || !found {
		return false, 0, err
	}
	fp, err := w.fingerprint()
	if err != nil {
		return false, 0, err
	}
	if kept.Fingerprint != fp {
		return false, 0, coderun.Errorf(coderun.EIdempotencyKeyReused,
			"Idempotency-Key %q was used for another request; use a new key for a new request", w.key)
	}
	if err := json.Unmarshal(kept.Result, result); err != nil {
		return false, 0, fmt.Errorf("replay %s: stored result: %w", w.op, err)
	}
	return true, outcome(kept.Status), nil
}

// commit makes w in one transaction: the caller is authorized, then do runs
// as an accepted write (see accept).
func (s *Service) commit(ctx context.Context, w write, result any, do func(tx *store.Tx) (outcome, error)) (replayed bool, o outcome, err error) {
	if err := w.key.validate(); err != nil {
		return false, 0, err
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		p, err := authorize(ctx, tx, w.handle, w.scope, w.role)
		if err != nil {
			return err
		}
		replayed, o, err = s.accept(ctx, tx, p, w, result, func() (outcome, error) { return do(tx) })
		return err
	})
	return replayed, o, err
}

// accept runs do as one accepted write of handle by p, inside tx. It holds the
// handle's row, so that the handle's writes take turns: a retry of w made while
// the first attempt is still in flight waits for it and then replays it. A
// replay fills result from the kept answer, skips do and costs nothing;
// otherwise do fills result, the write is counted against the handle's daily
// limit, and its answer is kept under w's key. Any error rolls all of it back.
func (s *Service) accept(ctx context.Context, tx *store.Tx, p *coderun.Principal, w write, result any, do func() (outcome, error)) (replayed bool, o outcome, err error) {
	h, err := tx.LockHandle(ctx, w.handle)
	if err != nil {
		return false, 0, err
	}
	if replayed, o, err = s.replay(ctx, tx, p, w, result); replayed || err != nil {
		return replayed, o, err
	}
	now := s.now()
	used, err := tx.DailyWrites(ctx, w.handle, now)
	if err != nil {
		return false, 0, err
	}
	if used >= h.DailyWriteLimit {
		reset := nextUTCMidnight(now)
		e := coderun.Errorf(coderun.EDailyWriteLimit, "handle %q made its %d writes for today; the count resets at %s",
			w.handle, h.DailyWriteLimit, reset.Format(time.RFC3339))
		e.RetryAfter = reset.Sub(now)
		e.Details = map[string]any{"limit": h.DailyWriteLimit, "resetAt": reset}
		return false, 0, e
	}
	if o, err = do(); err != nil {
		return false, 0, err
	}
	if err := tx.AddDailyWrite(ctx, w.handle, now); err != nil {
		return false, 0, err
	}
	if w.key == "" {
		return false, o, nil
	}
	fp, err := w.fingerprint()
	if err != nil {
		return false, 0, err
	}
	b, err := json.Marshal(result)
	if err != nil {
		return false, 0, fmt.Errorf("keep the answer of %s: %w", w.op, err)
	}
	kept := store.IdempotentWrite{Handle: w.handle, UserID: p.UserID, Key: string(w.key), Fingerprint: fp, Status: int(o), Result: b, CreatedAt: now}
	return false, o, tx.SaveIdempotentWrite(ctx, kept, now.Add(-idempotencyRetention))
}
