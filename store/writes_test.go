package store_test

import (
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// claimKey tries to claim w's key at now, with 24 h keys and 1 min leases.
func claimKey(t *testing.T, db *store.DB, w store.IdempotentWrite, now time.Time) (kept store.IdempotentWrite, claimed bool) {
	t.Helper()
	w.CreatedAt = now
	inTx(t, db, func(tx *store.Tx) error {
		var err error
		kept, claimed, err = tx.ClaimIdempotentWrite(t.Context(), w, now.Add(-24*time.Hour), now.Add(-time.Minute))
		return err
	})
	return kept, claimed
}

// An idempotency key is held by one attempt at a time; an attempt that died
// is taken over after its lease, and then can no longer hold it or answer; an answer is
// kept for 24 hours; a released key is free again.
func testIdempotencyClaims(t *testing.T, db *store.DB) {
	w := store.IdempotentWrite{Handle: "", UserID: "alice", Key: "k", Fingerprint: "fp", Claim: "first"}
	if _, ok := claimKey(t, db, w, at); !ok {
		t.Fatal("a fresh key was not claimed")
	}
	second := w
	second.Claim = "second"
	kept, ok := claimKey(t, db, second, at.Add(30*time.Second))
	if ok || !kept.InFlight() || kept.Claim != "first" {
		t.Fatalf("while the first is in flight: claimed=%v kept=%+v", ok, kept)
	}
	// Past the lease, the first is taken for dead.
	if _, ok := claimKey(t, db, second, at.Add(2*time.Minute)); !ok {
		t.Fatal("an abandoned claim was not taken over")
	}
	// Only the attempt holding the key can renew its hold.
	hold := func(c store.IdempotentWrite) error {
		return db.InTx(t.Context(), func(tx *store.Tx) error { return tx.HoldIdempotentWrite(t.Context(), c, at.Add(3*time.Minute)) })
	}
	wantCode(t, hold(w), coderun.EIdempotencyKeyInUse)
	if err := hold(second); err != nil {
		t.Fatal(err)
	}
	answer := func(c store.IdempotentWrite) error {
		c.Status, c.Result = 201, []byte(`{"id":1}`)
		return db.InTx(t.Context(), func(tx *store.Tx) error { return tx.FinishIdempotentWrite(t.Context(), c) })
	}
	wantCode(t, answer(w), coderun.EIdempotencyKeyInUse)
	if err := answer(second); err != nil {
		t.Fatal(err)
	}
	third := w
	third.Claim = "third"
	kept, ok = claimKey(t, db, third, at.Add(23*time.Hour))
	if ok || kept.InFlight() || kept.Status != 201 || string(kept.Result) != `{"id":1}` || kept.Fingerprint != "fp" {
		t.Fatalf("after the answer: claimed=%v kept=%+v", ok, kept)
	}
	// Releasing an answered key does nothing.
	inTx(t, db, func(tx *store.Tx) error { return tx.ReleaseIdempotentWrite(t.Context(), third) })
	if kept, ok = claimKey(t, db, third, at.Add(23*time.Hour)); ok || kept.Status != 201 {
		t.Fatalf("an answered key was released: claimed=%v kept=%+v", ok, kept)
	}
	// A day on, the key is new again; released, it is free.
	if _, ok := claimKey(t, db, third, at.Add(25*time.Hour)); !ok {
		t.Fatal("an expired key was not claimed afresh")
	}
	inTx(t, db, func(tx *store.Tx) error { return tx.ReleaseIdempotentWrite(t.Context(), third) })
	if _, ok := claimKey(t, db, second, at.Add(25*time.Hour)); !ok {
		t.Fatal("a released key was not free")
	}
}

// Keys past their retention are forgotten across handles, answered or in
// flight; younger keys stay, and a forgotten key can be claimed afresh.
func testForgetIdempotentWrites(t *testing.T, db *store.DB) {
	old := store.IdempotentWrite{Handle: "", UserID: "alice", Key: "old", Fingerprint: "fp", Claim: "a"}
	inFlight := old
	inFlight.UserID, inFlight.Key = "bob", "in-flight"
	young := old
	young.Key = "young"
	claimKey(t, db, old, at)
	claimKey(t, db, inFlight, at)
	claimKey(t, db, young, at.Add(2*time.Hour))
	old.Status, old.Result = 201, []byte(`{}`)
	inTx(t, db, func(tx *store.Tx) error { return tx.FinishIdempotentWrite(t.Context(), old) })

	var n int64
	inTx(t, db, func(tx *store.Tx) (err error) {
		n, err = tx.ForgetIdempotentWrites(t.Context(), at.Add(time.Hour))
		return err
	})
	if n != 2 {
		t.Fatalf("forgot %d keys, want 2", n)
	}
	// Claimed with a retention long enough to keep anything still there.
	claimAt := func(w store.IdempotentWrite) (store.IdempotentWrite, bool) {
		var kept store.IdempotentWrite
		var ok bool
		inTx(t, db, func(tx *store.Tx) (err error) {
			w.Claim, w.CreatedAt = "later", at.Add(3*time.Hour)
			kept, ok, err = tx.ClaimIdempotentWrite(t.Context(), w, at.Add(-time.Hour), at.Add(-time.Hour))
			return err
		})
		return kept, ok
	}
	if _, ok := claimAt(old); !ok {
		t.Error("a forgotten answered key was not free")
	}
	if _, ok := claimAt(inFlight); !ok {
		t.Error("a forgotten in-flight key was not free")
	}
	if kept, ok := claimAt(young); ok || kept.Claim != "a" {
		t.Errorf("a young key was forgotten: claimed=%v kept=%+v", ok, kept)
	}
}
