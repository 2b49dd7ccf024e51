package resolvers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// The world every test starts from: handle acme with alice (admin) and vera
// (viewer); handle globex with mallory (owner), who is no member of acme.
const (
	jwtIssuer   = "coderun-test"
	jwtAudience = "coderun-test"
)

var jwtSecret = []byte("resolvers-test-secret-of-32-bytes!")

type env struct {
	t   testing.TB
	db  *store.DB
	srv *httptest.Server
	// endpoint is where operations are POSTed.
	endpoint string
	logs     *testenv.LogBuffer
}

// newEnv serves the GraphQL handler over a real service on a fresh SQLite
// database. A tiny middleware stands in for the HTTP edge: it gives each
// request an id and, for POST, the principal named by X-Test-User (a JWT-like
// caller with every scope).
func newEnv(t testing.TB, opts resolvers.Options) *env {
	t.Helper()
	db := openDB(t)
	logs := &testenv.LogBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if opts.Authenticate == nil {
		opts.Authenticate = newAuthenticator(nil).Authenticate
	}
	svc := service.New(db, service.Options{Logger: opts.Logger})
	// The requests served are written before the database closes.
	t.Cleanup(func() { svc.FlushRequests(context.Background()) })
	srv := httptest.NewServer(withTestEdge(resolvers.NewHandler(svc, opts)))
	t.Cleanup(srv.Close)
	return &env{t: t, db: db, srv: srv, endpoint: srv.URL, logs: logs}
}

// openDB opens and migrates a fresh SQLite database holding the world every
// test starts from.
func openDB(t testing.TB) *store.DB {
	t.Helper()
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	err := db.InTx(ctx, func(tx *store.Tx) error {
		for _, h := range []string{"acme", "globex"} {
			if err := tx.CreateHandle(ctx, coderun.Handle{Name: h, MaxActiveRuns: 4, DailyWriteLimit: 1000}); err != nil {
				return err
			}
		}
		for _, m := range []coderun.Member{
			{Handle: "acme", UserID: "alice", Role: coderun.RoleAdmin},
			{Handle: "acme", UserID: "vera", Role: coderun.RoleViewer},
			{Handle: "globex", UserID: "mallory", Role: coderun.RoleOwner},
		} {
			if err := tx.PutMember(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// newAuthenticator verifies the tests' JWTs (and, given a service, PATs).
func newAuthenticator(tokens auth.TokenStore) *auth.Authenticator {
	return auth.NewAuthenticator(auth.JWTConfig{HS256Secret: jwtSecret, Issuer: jwtIssuer, Audience: jwtAudience}, tokens, nil)
}

var requestSeq atomic.Int64

func withTestEdge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := fmt.Sprintf("req_test%04d", requestSeq.Add(1))
		w.Header().Set("X-Request-Id", id)
		ctx := coderun.NewContextWithRequestID(r.Context(), id)
		if user := r.Header.Get("X-Test-User"); user != "" {
			ctx = coderun.NewContextWithPrincipal(ctx, &coderun.Principal{UserID: user, Kind: coderun.TokenJWT, Scopes: coderun.AllScopes})
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// gqlError is one entry of a response's errors.
type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

type response struct {
	status    int
	requestID string
	Data      json.RawMessage `json:"data"`
	Errors    []gqlError      `json:"errors"`
}

// do POSTs one operation as user and decodes the answer. The user is named
// both ways: to the test edge, and with a JWT to a real one.
func (e *env) do(user, query string, vars map[string]any) response {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	r, _ := e.raw(user, bytes.NewReader(body), int64(len(body)))
	return r
}

// data POSTs an operation that must succeed and decodes its data into out.
func (e *env) data(user, query string, vars map[string]any, out any) {
	e.t.Helper()
	r := e.do(user, query, vars)
	if r.status != http.StatusOK || len(r.Errors) > 0 {
		e.t.Fatalf("status %d, errors %+v", r.status, r.Errors)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		e.t.Fatalf("decode data %s: %v", r.Data, err)
	}
}

// onlyError asserts r failed with exactly one error of code, carrying r's
// request id, and returns it.
func onlyError(t *testing.T, r response, code string) gqlError {
	t.Helper()
	if len(r.Errors) != 1 {
		t.Fatalf("want one error with code %s, got %+v (data %s)", code, r.Errors, r.Data)
	}
	e := r.Errors[0]
	if e.Extensions["code"] != code {
		t.Fatalf("error code = %v, want %s (%+v)", e.Extensions["code"], code, e)
	}
	if r.requestID == "" || e.Extensions["requestId"] != r.requestID {
		t.Fatalf("error requestId = %v, want the response's %q", e.Extensions["requestId"], r.requestID)
	}
	return e
}

func (e *env) jwt(user string) string {
	e.t.Helper()
	token, err := auth.SignHS256(jwtSecret, jwtIssuer, jwtAudience, user, nil, time.Hour, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return "Bearer " + token
}
