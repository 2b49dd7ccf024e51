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
	// handle is the handle written to; "" for a write outside any handle (a
	// support report about nothing in particular), which only needs a
	// signed-in caller with scope.
	handle string
	// scope and role are what the caller needs to make it.
	scope coderun.Scope
	role  coderun.Role
	key   IdempotencyKey
	// op and input identify the request: a retry with the same key must repeat
	// both (input holds the path's values and the body).
	op    string
	input any
	// lease is how long an attempt may hold key before a retry may take it
	// for dead (default defaultLease).
	lease time.Duration
}

// defaultLease is how long a write may stay in flight before a retry may take
// it over; a write's transaction lasts well under a second.
const defaultLease = time.Minute

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

// authorizeWrite checks that the caller may make w.
func authorizeWrite(ctx context.Context, tx *store.Tx, w write) (*coderun.Principal, error) {
	if w.handle != "" {
		return authorize(ctx, tx, w.handle, w.scope, w.role)
	}
	return signedIn(ctx, w.scope)
}

// claim is an attempt's hold on a write's idempotency key; nil for a write
// made without a key.
type claim = store.IdempotentWrite

// begin starts the attempt to make w. A write without a key needs nothing
// more. A key not used before (or whose last attempt died) is claimed for
// this attempt, in a transaction of its own, so that retries made while it is
// in flight are told so (409 idempotency_key_in_use) instead of writing
// again. A key that was answered fills result with that answer: replayed is
// true and there is nothing more to do. The same key on another request is an
// error. The caller must end a claim it got with finish or release.
func (s *Service) begin(ctx context.Context, w write, result any) (c *claim, replayed bool, o outcome, err error) {
	if err := w.key.validate(); err != nil || w.key == "" {
		return nil, false, 0, err
	}
	fp, err := w.fingerprint()
	if err != nil {
		return nil, false, 0, err
	}
	lease := w.lease
	if lease == 0 {
		lease = defaultLease
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		p, err := authorizeWrite(ctx, tx, w)
		if err != nil {
			return err
		}
		now := s.now()
		attempt := claim{Handle: w.handle, UserID: p.UserID, Key: string(w.key), Fingerprint: fp, Claim: newID("clm_"), CreatedAt: now}
		kept, claimed, err := tx.ClaimIdempotentWrite(ctx, attempt, now.Add(-idempotencyRetention), now.Add(-lease))
		switch {
		case err != nil:
			return err
		case claimed:
			c = &attempt
			return nil
		case kept.Fingerprint != fp:
			return coderun.Errorf(coderun.EIdempotencyKeyReused,
				"Idempotency-Key %q was used for another request; use a new key for a new request", w.key)
		case kept.InFlight():
			e := coderun.Errorf(coderun.EIdempotencyKeyInUse,
				"a request with Idempotency-Key %q is still in flight; retry shortly to get its answer", w.key)
			e.RetryAfter = time.Second
			return e
		}
		if err := json.Unmarshal(kept.Result, result); err != nil {
			return fmt.Errorf("replay %s: stored result: %w", w.op, err)
		}
		replayed, o = true, outcome(kept.Status)
		return nil
	})
	return c, replayed, o, err
}

// settleTimeout bounds the writes that settle a key after its attempt:
// keeping its answer, or releasing it.
const settleTimeout = 10 * time.Second

// release frees c's key after its attempt failed (a rejected or rolled-back
// write keeps no answer), so that a retry writes afresh. It runs even when
// ctx is done: the caller may have hung up.
func (s *Service) release(ctx context.Context, c *claim) {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	err := s.db.InTx(ctx, func(tx *store.Tx) error { return tx.ReleaseIdempotentWrite(ctx, *c) })
	if err != nil {
		// The key stays claimed until its lease runs out; retries get 409 until then.
		s.log.WarnContext(ctx, "release idempotency key", "handle", c.Handle, "user", c.UserID, "err", err)
	}
}

// commit makes w: begin, then the write itself in one transaction in which
// the caller is authorized (again) and do runs as an accepted write (see
// accept).
func (s *Service) commit(ctx context.Context, w write, result any, do func(tx *store.Tx) (outcome, error)) (replayed bool, o outcome, err error) {
	c, replayed, o, err := s.begin(ctx, w, result)
	if err != nil || replayed {
		return replayed, o, err
	}
	defer s.settle(ctx, c, &err)
	o, err = s.finish(ctx, w, c, result, do)
	return false, o, err
}

// dailyWriteLeft returns an EDailyWriteLimit unless h may make one more
// write on the UTC day of now.
func dailyWriteLeft(ctx context.Context, tx *store.Tx, h coderun.Handle, now time.Time) error {
	used, err := tx.DailyWrites(ctx, h.Name, now)
	if err != nil {
		return err
	}
	if used < h.DailyWriteLimit {
		return nil
	}
	reset := nextUTCMidnight(now)
	e := coderun.Errorf(coderun.EDailyWriteLimit, "handle %q made its %d writes for today; the count resets at %s",
		h.Name, h.DailyWriteLimit, reset.Format(time.RFC3339))
	e.RetryAfter = reset.Sub(now)
	e.Details = map[string]any{"limit": h.DailyWriteLimit, "resetAt": reset}
	e.Quota = &coderun.Quota{Policy: "daily-writes", Limit: h.DailyWriteLimit, Window: 24 * time.Hour}
	return e
}

// commitThen is commit for a write whose answer is only known some time after
// its transaction (a cancel waits for its run to stop): the write commits
// with its key still in flight, so that a retry meanwhile is told to come
// back (409 idempotency_key_in_use), then then finishes result, and that is
// the answer kept under the key. A retry gets what the first caller got, not
// the state the transaction left. If the process dies before the answer is
// kept, a retry takes the key over after its lease and writes again, which
// such a write must allow.
func (s *Service) commitThen(ctx context.Context, w write, result any, do func(tx *store.Tx) (outcome, error), then func(ctx context.Context)) (replayed bool, o outcome, err error) {
	c, replayed, o, err := s.begin(ctx, w, result)
	if err != nil || replayed {
		return replayed, o, err
	}
	if o, err = s.commitHeld(ctx, w, c, result, do); err != nil {
		return false, 0, err
	}
	// The write is made: its answer is kept even if the caller hangs up.
	ctx = context.WithoutCancel(ctx)
	then(ctx)
	if c != nil {
		s.keepAnswer(ctx, w, c, o, result)
	}
	return false, o, nil
}

// commitHeld makes w in one transaction without keeping its answer: the
// transaction renews c (and fails if c was taken over meanwhile), which stays
// in flight if it succeeds and is released if it fails.
func (s *Service) commitHeld(ctx context.Context, w write, c *claim, result any, do func(tx *store.Tx) (outcome, error)) (o outcome, err error) {
	defer s.settle(ctx, c, &err)
	return s.finish(ctx, w, nil, result, func(tx *store.Tx) (outcome, error) {
		if c != nil {
			if err := tx.HoldIdempotentWrite(ctx, *c, s.now()); err != nil {
				return 0, err
			}
		}
		return do(tx)
	})
}

// keepAnswer keeps result, answered with o, under c's key. If it cannot, the
// key stays in flight until its lease lapses.
func (s *Service) keepAnswer(ctx context.Context, w write, c *claim, o outcome, result any) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	b, err := json.Marshal(result)
	if err == nil {
		answered := *c
		answered.Status, answered.Result = int(o), b
		err = s.db.InTx(ctx, func(tx *store.Tx) error { return tx.FinishIdempotentWrite(ctx, answered) })
	}
	if err != nil {
		s.log.WarnContext(ctx, "keep the answer of "+w.op, "handle", c.Handle, "user", c.UserID, "err", err)
	}
}

// settle, deferred by the attempt holding c, releases c when the attempt
// failed, with an error or a panic.
func (s *Service) settle(ctx context.Context, c *claim, err *error) {
	if v := recover(); v != nil {
		s.release(ctx, c)
		panic(v)
	}
	if *err != nil {
		s.release(ctx, c)
	}
}

// finish makes the write c began (nil for one without a key) in one
// transaction; the caller settles c.
func (s *Service) finish(ctx context.Context, w write, c *claim, result any, do func(tx *store.Tx) (outcome, error)) (o outcome, err error) {
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		p, err := authorizeWrite(ctx, tx, w)
		if err != nil {
			return err
		}
		o, err = s.accept(ctx, tx, p, w, c, result, func() (outcome, error) { return do(tx) })
		return err
	})
	return o, err
}

// accept runs do as one accepted write by p, inside tx. A write to a handle
// holds the handle's row, so that the handle's writes take turns against its
// limits, and is counted against the handle's daily limit; then do fills
// result, and its answer is kept under c's key. Any error rolls all of it
// back.
func (s *Service) accept(ctx context.Context, tx *store.Tx, p *coderun.Principal, w write, c *claim, result any, do func() (outcome, error)) (o outcome, err error) {
	now := s.now()
	if w.handle != "" {
		h, err := tx.LockHandle(ctx, w.handle)
		if err != nil {
			return 0, err
		}
		if err := dailyWriteLeft(ctx, tx, h, now); err != nil {
			return 0, err
		}
	}
	if o, err = do(); err != nil {
		return 0, err
	}
	if w.handle != "" {
		if err := tx.AddDailyWrite(ctx, w.handle, now); err != nil {
			return 0, err
		}
	}
	if c == nil {
		return o, nil
	}
	b, err := json.Marshal(result)
	if err != nil {
		return 0, fmt.Errorf("keep the answer of %s: %w", w.op, err)
	}
	answered := *c
	answered.Status, answered.Result = int(o), b
	return o, tx.FinishIdempotentWrite(ctx, answered)
}
