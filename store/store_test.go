package store_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/store"
)

// engines are the databases every store test runs against.
var engines = []struct {
	name string
	url  func(testing.TB) string
}{
	{"sqlite", testenv.SQLiteURL},
	{"postgres", testenv.PostgresURL},
}

// TestStore is the store's specification, run on each engine with a fresh
// database per subtest.
func TestStore(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, db *store.DB)
	}{
		{"handles are created once and read back", testHandles},
		{"members are added and change role", testMembers},
		{"access tokens are found by hash, touched and revoked", testAccessTokens},
		{"revoking by prefix refuses an ambiguous prefix", testRevokeByPrefix},
		{"runtimes are inserted, then replaced keeping created_at", testPutRuntime},
		{"runtimes are listed by key, page after page", testListRuntimes},
		{"times round-trip exactly, in UTC, to the microsecond", testTimes},
		{"a failed transaction writes nothing", testRollback},
		{"a read transaction cannot write", testReadOnly},
		{"concurrent writers all succeed", testConcurrentWriters},
		{"migrating again changes nothing", testMigrateTwice},
		{"an idempotency key is held by one attempt at a time", testIdempotencyClaims},
		{"expired idempotency keys are forgotten across handles", testForgetIdempotentWrites},
	}
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					db := openDB(t, engine.url(t))
					if db.Dialect() != engine.name {
						t.Fatalf("Dialect() = %q, want %q", db.Dialect(), engine.name)
					}
					tc.run(t, db)
				})
			}
		})
	}
}

// urls remembers the URL each DB was opened with, so that a test can open a
// second DB on the same database, as a second process would.
var urls sync.Map

func openDB(t testing.TB, url string) *store.DB {
	t.Helper()
	db, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := db.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	urls.Store(db, url)
	return db
}

// inTx runs fn in a write transaction and fails the test on an error.
func inTx(t testing.TB, db *store.DB, fn func(*store.Tx) error) {
	t.Helper()
	if err := db.InTx(t.Context(), fn); err != nil {
		t.Fatal(err)
	}
}

// read runs fn in a read transaction and fails the test on an error.
func read(t testing.TB, db *store.DB, fn func(*store.Tx) error) {
	t.Helper()
	if err := db.Read(t.Context(), fn); err != nil {
		t.Fatal(err)
	}
}

// wantCode fails unless err is a *coderun.Error with code.
func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if coderun.AsError(err) == nil || coderun.ErrorCode(err) != code {
		t.Fatalf("error = %v, want a *coderun.Error with code %s", err, code)
	}
}

// at is a fixed point in time with a microsecond part, in a zone that is not UTC.
var at = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.FixedZone("CET", 3600))

func createHandle(t testing.TB, db *store.DB, name string) coderun.Handle {
	t.Helper()
	h := coderun.Handle{Name: name, MaxActiveRuns: 4, DailyWriteLimit: 1000, CreatedAt: at}
	inTx(t, db, func(tx *store.Tx) error { return tx.CreateHandle(t.Context(), h) })
	return h
}

func testHandles(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")

	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetHandle(ctx, "acme")
		if err != nil {
			return err
		}
		want := coderun.Handle{Name: "acme", MaxActiveRuns: 4, DailyWriteLimit: 1000, CreatedAt: at.UTC()}
		if got != want {
			t.Errorf("GetHandle = %+v, want %+v", got, want)
		}
		_, err = tx.GetHandle(ctx, "nobody")
		wantCode(t, err, coderun.EHandleNotFound)
		return nil
	})

	err := db.InTx(ctx, func(tx *store.Tx) error {
		return tx.CreateHandle(ctx, coderun.Handle{Name: "acme", MaxActiveRuns: 1, DailyWriteLimit: 1})
	})
	wantCode(t, err, coderun.EConflict)

	// A zero CreatedAt takes the database clock.
	clock := time.Date(2027, 1, 2, 3, 4, 5, 6000, time.UTC)
	db.Now = func() time.Time { return clock }
	inTx(t, db, func(tx *store.Tx) error { return tx.CreateHandle(ctx, coderun.Handle{Name: "globex"}) })
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetHandle(ctx, "globex")
		if !got.CreatedAt.Equal(clock) {
			t.Errorf("CreatedAt = %v, want the clock's %v", got.CreatedAt, clock)
		}
		return err
	})
}

func testMembers(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	createHandle(t, db, "globex")

	inTx(t, db, func(tx *store.Tx) error {
		if err := tx.PutMember(ctx, coderun.Member{Handle: "acme", UserID: "alice", Role: coderun.RoleDeveloper}); err != nil {
			return err
		}
		return tx.PutMember(ctx, coderun.Member{Handle: "globex", UserID: "alice", Role: coderun.RoleViewer})
	})
	role := func(handle, user string) coderun.Role {
		t.Helper()
		var r coderun.Role
		read(t, db, func(tx *store.Tx) (err error) {
			r, err = tx.MemberRole(ctx, handle, user)
			return err
		})
		return r
	}
	if r := role("acme", "alice"); r != coderun.RoleDeveloper {
		t.Errorf("alice in acme is %v, want developer", r)
	}
	if r := role("globex", "alice"); r != coderun.RoleViewer {
		t.Errorf("alice in globex is %v, want viewer", r)
	}

	inTx(t, db, func(tx *store.Tx) error {
		return tx.PutMember(ctx, coderun.Member{Handle: "acme", UserID: "alice", Role: coderun.RoleOwner})
	})
	if r := role("acme", "alice"); r != coderun.RoleOwner {
		t.Errorf("after the change alice in acme is %v, want owner", r)
	}
	if r := role("globex", "alice"); r != coderun.RoleViewer {
		t.Errorf("changing acme changed globex: alice is %v, want viewer", r)
	}
	if r := role("acme", "bob"); r != coderun.RoleNone {
		t.Errorf("bob, not a member, is %v, want none", r)
	}
	if r := role("nowhere", "alice"); r != coderun.RoleNone {
		t.Errorf("alice in a missing handle is %v, want none", r)
	}

	err := db.InTx(ctx, func(tx *store.Tx) error {
		return tx.PutMember(ctx, coderun.Member{Handle: "nowhere", UserID: "alice", Role: coderun.RoleViewer})
	})
	wantCode(t, err, coderun.EHandleNotFound)
	err = db.InTx(ctx, func(tx *store.Tx) error {
		return tx.PutMember(ctx, coderun.Member{Handle: "acme", UserID: "bob", Role: coderun.RoleNone})
	})
	wantCode(t, err, coderun.EInvalidRequest)
}

// newToken returns an unsaved token of alice in acme whose secret is secret.
func newToken(id, prefix, secret string) coderun.AccessToken {
	hash := sha256.Sum256([]byte(secret))
	return coderun.AccessToken{
		ID:        id,
		UserID:    "alice",
		Handle:    "acme",
		Scopes:    []coderun.Scope{coderun.ScopeRunsRead, coderun.ScopeRuntimesRead},
		Prefix:    prefix,
		Hash:      hash[:],
		ExpiresAt: at.Add(720 * time.Hour),
		CreatedAt: at,
	}
}

func testAccessTokens(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	tok := newToken("tok_01", "crp_aaaa", "crp_aaaa-secret")
	inTx(t, db, func(tx *store.Tx) error { return tx.CreateAccessToken(ctx, tok) })

	byHash := func(secret string) (coderun.AccessToken, error) {
		hash := sha256.Sum256([]byte(secret))
		var got coderun.AccessToken
		err := db.Read(ctx, func(tx *store.Tx) (err error) {
			got, err = tx.AccessTokenByHash(ctx, hash[:])
			return err
		})
		return got, err
	}
	got, err := byHash("crp_aaaa-secret")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "tok_01" || got.UserID != "alice" || got.Handle != "acme" || got.Prefix != "crp_aaaa" ||
		!bytes.Equal(got.Hash, tok.Hash) || !slices.Equal(got.Scopes, tok.Scopes) ||
		!got.ExpiresAt.Equal(tok.ExpiresAt) || !got.CreatedAt.Equal(at) ||
		got.RevokedAt != nil || got.LastUsedAt != nil {
		t.Errorf("AccessTokenByHash = %+v, want %+v", got, tok)
	}
	_, err = byHash("crp_aaaa-wrong")
	wantCode(t, err, coderun.ETokenNotFound)

	// The same secret (hash) or id cannot be stored twice.
	err = db.InTx(ctx, func(tx *store.Tx) error {
		return tx.CreateAccessToken(ctx, newToken("tok_02", "crp_bbbb", "crp_aaaa-secret"))
	})
	wantCode(t, err, coderun.EConflict)
	err = db.InTx(ctx, func(tx *store.Tx) error {
		return tx.CreateAccessToken(ctx, newToken("tok_01", "crp_bbbb", "crp_bbbb-secret"))
	})
	wantCode(t, err, coderun.EConflict)
	err = db.InTx(ctx, func(tx *store.Tx) error {
		other := newToken("tok_03", "crp_cccc", "crp_cccc-secret")
		other.Handle = "nowhere"
		return tx.CreateAccessToken(ctx, other)
	})
	wantCode(t, err, coderun.EHandleNotFound)

	used := at.Add(time.Hour)
	inTx(t, db, func(tx *store.Tx) error { return tx.TouchAccessToken(ctx, "tok_01", used) })
	got, _ = byHash("crp_aaaa-secret")
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
		t.Errorf("after Touch LastUsedAt = %v, want %v", got.LastUsedAt, used)
	}
	err = db.InTx(ctx, func(tx *store.Tx) error { return tx.TouchAccessToken(ctx, "tok_missing", used) })
	wantCode(t, err, coderun.ETokenNotFound)

	revoked := at.Add(2 * time.Hour)
	inTx(t, db, func(tx *store.Tx) error {
		r, err := tx.RevokeAccessToken(ctx, "tok_01", revoked)
		if err == nil && (r.ID != "tok_01" || r.RevokedAt == nil || !r.RevokedAt.Equal(revoked)) {
			t.Errorf("RevokeAccessToken = %+v, want tok_01 revoked at %v", r, revoked)
		}
		return err
	})
	// Revoking again keeps the first revocation.
	inTx(t, db, func(tx *store.Tx) error {
		r, err := tx.RevokeAccessToken(ctx, "crp_aaaa", revoked.Add(time.Hour))
		if err == nil && (r.RevokedAt == nil || !r.RevokedAt.Equal(revoked)) {
			t.Errorf("revoking again: RevokedAt = %v, want the first revocation %v", r.RevokedAt, revoked)
		}
		return err
	})
	got, _ = byHash("crp_aaaa-secret")
	if got.RevokedAt == nil || !got.RevokedAt.Equal(revoked) {
		t.Errorf("stored RevokedAt = %v, want %v", got.RevokedAt, revoked)
	}
	err = db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.RevokeAccessToken(ctx, "crp_zzzz", revoked)
		return err
	})
	wantCode(t, err, coderun.ETokenNotFound)
}

func testRevokeByPrefix(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	inTx(t, db, func(tx *store.Tx) error {
		for _, tok := range []coderun.AccessToken{
			newToken("tok_1", "crp_same", "secret-1"),
			newToken("tok_2", "crp_same", "secret-2"),
			newToken("tok_3", "crp_mine", "secret-3"),
			newToken("tok_4", "tok_1", "secret-4"), // its prefix is another token's id
		} {
			if err := tx.CreateAccessToken(ctx, tok); err != nil {
				return err
			}
		}
		return nil
	})
	revoke := func(idOrPrefix string) (coderun.AccessToken, error) {
		var got coderun.AccessToken
		err := db.InTx(ctx, func(tx *store.Tx) (err error) {
			got, err = tx.RevokeAccessToken(ctx, idOrPrefix, time.Time{})
			return err
		})
		return got, err
	}

	_, err := revoke("crp_same")
	wantCode(t, err, coderun.EConflict)
	if e := coderun.AsError(err); e != nil && !strings.Contains(e.Message, "ambiguous") {
		t.Errorf("message %q does not say the prefix is ambiguous", e.Message)
	}
	if got, err := revoke("crp_mine"); err != nil || got.ID != "tok_3" || got.RevokedAt == nil {
		t.Errorf("revoke crp_mine = %+v, %v; want tok_3 revoked", got, err)
	}
	if got, err := revoke("tok_1"); err != nil || got.ID != "tok_1" {
		t.Errorf("revoke tok_1 = %+v, %v; want the token with that id", got, err)
	}

	// The ambiguous attempt revoked nothing; the id match revoked only tok_1.
	revokedIDs := map[string]bool{}
	read(t, db, func(tx *store.Tx) error {
		for _, secret := range []string{"secret-1", "secret-2", "secret-3", "secret-4"} {
			hash := sha256.Sum256([]byte(secret))
			tok, err := tx.AccessTokenByHash(ctx, hash[:])
			if err != nil {
				return err
			}
			revokedIDs[tok.ID] = tok.RevokedAt != nil
		}
		return nil
	})
	want := map[string]bool{"tok_1": true, "tok_2": false, "tok_3": true, "tok_4": false}
	if fmt.Sprint(revokedIDs) != fmt.Sprint(want) {
		t.Errorf("revoked = %v, want %v", revokedIDs, want)
	}
}

func newRuntime(handle, key string) coderun.Runtime {
	return coderun.Runtime{
		Handle:         handle,
		Key:            key,
		Image:          "127.0.0.1:5000/qa/python:3.12",
		Digest:         "sha256:" + strings.Repeat("ab", 32),
		Command:        []string{"python3", "main.py", "--flag=a b"},
		EntrypointFile: "main.py",
		Limits:         coderun.Limits{TimeoutSeconds: 30, MemoryMiB: 256, CPUs: 1.5, Pids: 64, OutputBytes: 5 << 30},
		Description:    "QA scripts ☃",
		Validation:     coderun.Validation{Status: coderun.ValidationPending},
		CreatedAt:      at,
		UpdatedAt:      at,
	}
}

func getRuntime(t testing.TB, db *store.DB, handle, key string) coderun.Runtime {
	t.Helper()
	var rt coderun.Runtime
	read(t, db, func(tx *store.Tx) (err error) {
		rt, err = tx.GetRuntime(t.Context(), handle, key)
		return err
	})
	return rt
}

func putRuntime(t testing.TB, db *store.DB, rt coderun.Runtime) (created bool) {
	t.Helper()
	inTx(t, db, func(tx *store.Tx) (err error) {
		created, err = tx.PutRuntime(t.Context(), rt)
		return err
	})
	return created
}

// equalRuntime compares runtimes field by field, times by instant.
func equalRuntime(t testing.TB, got, want coderun.Runtime) {
	t.Helper()
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Errorf("times = %v, %v; want %v, %v", got.CreatedAt, got.UpdatedAt, want.CreatedAt, want.UpdatedAt)
	}
	got.CreatedAt, got.UpdatedAt, want.CreatedAt, want.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	gv, wv := got.Validation, want.Validation
	got.Validation, want.Validation = coderun.Validation{}, coderun.Validation{}
	if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) {
		t.Errorf("runtime =\n%#v\nwant\n%#v", got, want)
	}
	if gv.Status != wv.Status ||
		(gv.CheckedAt == nil) != (wv.CheckedAt == nil) || gv.CheckedAt != nil && !gv.CheckedAt.Equal(*wv.CheckedAt) ||
		(gv.ResolvedDigest == nil) != (wv.ResolvedDigest == nil) || gv.ResolvedDigest != nil && *gv.ResolvedDigest != *wv.ResolvedDigest ||
		(gv.Error == nil) != (wv.Error == nil) || gv.Error != nil && *gv.Error != *wv.Error {
		t.Errorf("validation = %s, want %s", describe(gv), describe(wv))
	}
}

func describe(v coderun.Validation) string {
	s := fmt.Sprintf("{%s", v.Status)
	if v.CheckedAt != nil {
		s += " checked " + v.CheckedAt.String()
	}
	if v.ResolvedDigest != nil {
		s += " resolved " + *v.ResolvedDigest
	}
	if v.Error != nil {
		s += fmt.Sprintf(" error %+v", *v.Error)
	}
	return s + "}"
}

func testPutRuntime(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	createHandle(t, db, "globex")

	rt := newRuntime("acme", "python312")
	if created := putRuntime(t, db, rt); !created {
		t.Error("first put: created = false, want true")
	}
	equalRuntime(t, getRuntime(t, db, "acme", "python312"), rt)

	// Replace every column: the validation gains all its optional parts.
	checked := at.Add(time.Minute)
	resolved := "sha256:" + strings.Repeat("cd", 32)
	next := rt
	next.Image = "127.0.0.1:5000/qa/python:3.13"
	next.Digest = resolved
	next.Command = []string{"python3", "-u", "main.py"}
	next.EntrypointFile = "app.py"
	next.Limits = coderun.Limits{TimeoutSeconds: 900, MemoryMiB: 8192, CPUs: 0.1, Pids: 8, OutputBytes: 1024}
	next.Network = true
	next.Description = ""
	next.Validation = coderun.Validation{
		Status:         coderun.ValidationFailed,
		CheckedAt:      &checked,
		ResolvedDigest: &resolved,
		Error:          &coderun.ErrorDetail{Code: coderun.EDigestMismatch, Message: "want sha256:ab…, registry has sha256:cd…"},
	}
	next.CreatedAt = at.Add(24 * time.Hour) // ignored: a replacement keeps created_at
	next.UpdatedAt = at.Add(2 * time.Minute)
	if created := putRuntime(t, db, next); created {
		t.Error("second put: created = true, want false")
	}
	want := next
	want.CreatedAt = rt.CreatedAt
	equalRuntime(t, getRuntime(t, db, "acme", "python312"), want)

	// And back to none of them: NULL columns read back as nil.
	putRuntime(t, db, rt)
	equalRuntime(t, getRuntime(t, db, "acme", "python312"), rt)

	// Another handle's runtime of the same key is a different runtime.
	other := newRuntime("globex", "python312")
	other.Description = "globex's"
	if created := putRuntime(t, db, other); !created {
		t.Error("put in another handle: created = false, want true")
	}
	equalRuntime(t, getRuntime(t, db, "acme", "python312"), rt)

	read(t, db, func(tx *store.Tx) error {
		_, err := tx.GetRuntime(ctx, "acme", "missing")
		wantCode(t, err, coderun.ERuntimeNotFound)
		_, err = tx.GetRuntime(ctx, "initech", "python312")
		wantCode(t, err, coderun.ERuntimeNotFound)
		return nil
	})
	err := db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.PutRuntime(ctx, newRuntime("initech", "python312"))
		return err
	})
	wantCode(t, err, coderun.EHandleNotFound)
}

func testListRuntimes(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	createHandle(t, db, "globex")
	// Punctuation sorts differently under natural-language collations; the
	// store orders by bytes on both engines.
	keys := []string{"b", "a-b", "a.b", "a_b", "ab", "a", "z9", "z10", "0"}
	for _, key := range keys {
		putRuntime(t, db, newRuntime("acme", key))
	}
	putRuntime(t, db, newRuntime("globex", "aa"))

	var listed []string
	after := ""
	pages := 0
	for {
		var page []coderun.Runtime
		read(t, db, func(tx *store.Tx) (err error) {
			page, err = tx.ListRuntimes(ctx, "acme", after, 2)
			return err
		})
		if len(page) > 2 {
			t.Fatalf("page of %d runtimes, limit 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		pages++
		for _, rt := range page {
			if rt.Handle != "acme" {
				t.Errorf("listed %s/%s in acme", rt.Handle, rt.Key)
			}
			listed = append(listed, rt.Key)
		}
		after = page[len(page)-1].Key
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("listed %q, want %q", listed, want)
	}
	if pages != 5 {
		t.Errorf("%d pages, want 5", pages)
	}
}

func testTimes(t *testing.T, db *store.DB) {
	ctx := t.Context()
	times := []time.Time{
		at,
		time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -7*3600)),
		time.Date(2026, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
	}
	for i, want := range times {
		name := fmt.Sprintf("h%d", i)
		inTx(t, db, func(tx *store.Tx) error {
			return tx.CreateHandle(ctx, coderun.Handle{Name: name, CreatedAt: want})
		})
		read(t, db, func(tx *store.Tx) error {
			h, err := tx.GetHandle(ctx, name)
			if !h.CreatedAt.Equal(want) || h.CreatedAt.Location() != time.UTC {
				t.Errorf("stored %v, read %v; want the same instant in UTC", want, h.CreatedAt)
			}
			return err
		})
	}

	// Below a microsecond is dropped, not rounded.
	inTx(t, db, func(tx *store.Tx) error {
		return tx.CreateHandle(ctx, coderun.Handle{Name: "nanos", CreatedAt: time.Date(2026, 5, 5, 5, 5, 5, 123456789, time.UTC)})
	})
	read(t, db, func(tx *store.Tx) error {
		h, err := tx.GetHandle(ctx, "nanos")
		if want := time.Date(2026, 5, 5, 5, 5, 5, 123456000, time.UTC); !h.CreatedAt.Equal(want) {
			t.Errorf("stored …05.123456789, read %v; want %v", h.CreatedAt, want)
		}
		return err
	})
}

func testRollback(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	failure := errors.New("changed my mind")

	err := db.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateHandle(ctx, coderun.Handle{Name: "globex"}); err != nil {
			return err
		}
		if _, err := tx.PutRuntime(ctx, newRuntime("globex", "python312")); err != nil {
			return err
		}
		return failure
	})
	if !errors.Is(err, failure) {
		t.Fatalf("InTx = %v, want fn's error", err)
	}

	// A conflict after a successful write undoes that write too.
	err = db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.PutRuntime(ctx, newRuntime("acme", "python312")); err != nil {
			return err
		}
		return tx.CreateHandle(ctx, coderun.Handle{Name: "acme"})
	})
	wantCode(t, err, coderun.EConflict)

	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the panic of fn", p)
			}
		}()
		_ = db.InTx(ctx, func(tx *store.Tx) error {
			if err := tx.PutMember(ctx, coderun.Member{Handle: "acme", UserID: "mallory", Role: coderun.RoleOwner}); err != nil {
				return err
			}
			panic("boom")
		})
	}()

	read(t, db, func(tx *store.Tx) error {
		_, err := tx.GetHandle(ctx, "globex")
		wantCode(t, err, coderun.EHandleNotFound)
		_, err = tx.GetRuntime(ctx, "globex", "python312")
		wantCode(t, err, coderun.ERuntimeNotFound)
		_, err = tx.GetRuntime(ctx, "acme", "python312")
		wantCode(t, err, coderun.ERuntimeNotFound)
		role, err := tx.MemberRole(ctx, "acme", "mallory")
		if role != coderun.RoleNone {
			t.Errorf("mallory is %v after the panic, want none", role)
		}
		return err
	})

	// The database is still usable: the rolled-back transactions released it.
	createHandle(t, db, "globex")
}

func testReadOnly(t *testing.T, db *store.DB) {
	ctx := t.Context()
	err := db.Read(ctx, func(tx *store.Tx) error {
		return tx.CreateHandle(ctx, coderun.Handle{Name: "acme"})
	})
	if err == nil {
		t.Fatal("CreateHandle in a read transaction succeeded")
	}
	err = db.Read(ctx, func(tx *store.Tx) error {
		_, err := tx.GetHandle(ctx, "acme")
		return err
	})
	wantCode(t, err, coderun.EHandleNotFound)
}

// testConcurrentWriters has many goroutines write at once, each reading before
// it writes (the pattern that makes SQLite fail with "database is locked" when
// a read lock must be upgraded), through two DB values on the same database,
// as a server and a command-line tool would.
func testConcurrentWriters(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	other := db
	if db.Dialect() == "sqlite" {
		url, _ := urls.Load(db)
		other = openDB(t, url.(string))
	}

	const writers, readers, rounds = 20, 4, 5
	var wg sync.WaitGroup
	errs := make(chan error, (writers+readers)*rounds)
	for w := range writers {
		conn := db
		if w%2 == 1 {
			conn = other
		}
		wg.Go(func() {
			for r := range rounds {
				errs <- conn.InTx(ctx, func(tx *store.Tx) error {
					if _, err := tx.GetHandle(ctx, "acme"); err != nil {
						return err
					}
					name := fmt.Sprintf("h-%d-%d", w, r)
					if err := tx.CreateHandle(ctx, coderun.Handle{Name: name}); err != nil {
						return err
					}
					if err := tx.PutMember(ctx, coderun.Member{Handle: name, UserID: "alice", Role: coderun.RoleOwner}); err != nil {
						return err
					}
					_, err := tx.PutRuntime(ctx, newRuntime("acme", name))
					return err
				})
			}
		})
	}
	// Readers run beside the writers.
	for range readers {
		wg.Go(func() {
			for range rounds {
				errs <- db.Read(ctx, func(tx *store.Tx) error {
					_, err := tx.ListRuntimes(ctx, "acme", "", 100)
					return err
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}

	var all []coderun.Runtime
	read(t, db, func(tx *store.Tx) (err error) {
		all, err = tx.ListRuntimes(ctx, "acme", "", 1000)
		return err
	})
	if len(all) != writers*rounds {
		t.Errorf("%d runtimes after %d writes, want %d", len(all), writers*rounds, writers*rounds)
	}
}

func testMigrateTwice(t *testing.T, db *store.DB) {
	createHandle(t, db, "acme")
	if err := db.Migrate(t.Context()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	read(t, db, func(tx *store.Tx) error {
		_, err := tx.GetHandle(t.Context(), "acme")
		return err
	})
}

func TestOpen(t *testing.T) {
	for _, url := range []string{"mysql://root@localhost/db", "sqlite://", "sqlite://:memory:", "sqlite://x.db?mode=ro", "file.db", "postgres//x"} {
		if db, err := store.Open(t.Context(), url); err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded, want an error", url)
		}
	}
	_, err := store.Open(t.Context(), "mysql://root:hunter2@localhost/db")
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "mysql") {
		t.Errorf("Open(mysql://…) error = %v, want one naming the scheme and not the password", err)
	}

	// A relative path is relative to the working directory; its directory is made.
	t.Chdir(t.TempDir())
	db := openDB(t, "sqlite://./var/lib/coderun.db")
	createHandle(t, db, "acme")
	again := openDB(t, "sqlite://var/lib/coderun.db")
	read(t, again, func(tx *store.Tx) error {
		_, err := tx.GetHandle(t.Context(), "acme")
		return err
	})

	// The empty URL is the embedded default.
	def := openDB(t, "")
	if def.Dialect() != "sqlite" {
		t.Errorf("Open(\"\").Dialect() = %q, want sqlite", def.Dialect())
	}
}
