package service_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// Requests recorded from many goroutines all reach the database, in a few
// batches, and a flush asked for by a caller who has gone (a cancelled
// context) still writes them.
func TestRequestLogWritesEveryRecord(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	svc := service.New(db, service.Options{})
	const n = 2000 // several batches' worth
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = "req_" + ulid.Make().String()
		wg.Go(func() {
			svc.RecordRequest(coderun.RequestRecord{ID: ids[i], UserID: "alice", Method: "GET", Route: "GET /healthz", Status: 200, At: time.Now()})
		})
	}
	wg.Wait()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	svc.FlushRequests(gone)
	err := db.Read(ctx, func(tx *store.Tx) error {
		for _, id := range ids {
			if r, err := tx.Request(ctx, id); err != nil || r.UserID != "alice" {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Forget drops requests too old to cite and idempotency keys too old to
// replay, including those of a handle that no longer writes, and keeps the
// rest.
func TestForgetDropsWhatOutlivedItsRetention(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	svc := service.New(db, service.Options{Now: func() time.Time { return now }})
	idle := store.IdempotentWrite{Handle: "", UserID: "idle", Key: "k", Fingerprint: "fp", Claim: "c", CreatedAt: now.Add(-25 * time.Hour)}
	recent := idle
	recent.Key, recent.CreatedAt = "recent", now.Add(-23*time.Hour)
	err := db.InTx(ctx, func(tx *store.Tx) error {
		for _, w := range []store.IdempotentWrite{idle, recent} {
			if _, ok, err := tx.ClaimIdempotentWrite(ctx, w, w.CreatedAt.Add(-24*time.Hour), w.CreatedAt); err != nil || !ok {
				return fmt.Errorf("claim %s: claimed=%v, %w", w.Key, ok, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ancient := coderun.RequestRecord{ID: "req_" + ulid.Make().String(), UserID: "idle", Method: "GET", Route: "GET /healthz", Status: 200, At: now.Add(-31 * 24 * time.Hour)}
	fresh := ancient
	fresh.ID, fresh.At = "req_"+ulid.Make().String(), now
	svc.RecordRequest(ancient)
	svc.RecordRequest(fresh)
	svc.FlushRequests(ctx)

	svc.Forget(ctx)
	err = db.Read(ctx, func(tx *store.Tx) error {
		if _, err := tx.Request(ctx, ancient.ID); coderun.ErrorCode(err) != coderun.ERequestNotFound {
			t.Errorf("a request past its retention: %v, want %s", err, coderun.ERequestNotFound)
		}
		if _, err := tx.Request(ctx, fresh.ID); err != nil {
			t.Errorf("a fresh request: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// What is left of the keys: only the recent one.
	err = db.InTx(ctx, func(tx *store.Tx) error {
		n, err := tx.ForgetIdempotentWrites(ctx, now)
		if n != 1 {
			t.Errorf("%d keys left after Forget, want 1 (the recent one)", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Housekeep forgets at once, and returns when its context ends.
func TestHousekeepForgetsAtOnceUntilStopped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	now := time.Now()
	svc := service.New(db, service.Options{})
	old := coderun.RequestRecord{ID: "req_" + ulid.Make().String(), UserID: "u", Method: "GET", Route: "GET /healthz", Status: 200, At: now.Add(-31 * 24 * time.Hour)}
	svc.RecordRequest(old)
	svc.FlushRequests(ctx)
	done := make(chan struct{})
	go func() { defer close(done); svc.Housekeep(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if rerr := db.Read(ctx, func(tx *store.Tx) error { _, err = tx.Request(ctx, old.ID); return nil }); rerr != nil {
			t.Fatal(rerr)
		}
		if coderun.ErrorCode(err) == coderun.ERequestNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Housekeep did not forget an old request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Housekeep did not return when its context ended")
	}
}
