package rest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
	"github.com/gharart/coderun/web"
)

// stack is the whole service over a real database, served on loopback.
type stack struct {
	t      *testing.T
	url    string
	db     *store.DB
	svc    *service.Service
	events *events.Hub // streams runs to GraphQL subscribers (the viewer)
	secret []byte
	edKey  ed25519.PrivateKey
}

const (
	issuer   = "coderun"
	audience = "coderun"
)

var quietLog = slog.New(slog.DiscardHandler)

// unthrottled keeps the rate limits out of the way of tests about other things.
var unthrottled = rest.Throttles{
	Read: rest.Rate{PerSecond: 1e6, Burst: 1e6}, Write: rest.Rate{PerSecond: 1e6, Burst: 1e6},
	GraphQL: rest.Rate{PerSecond: 1e6, Burst: 1e6}, AuthFailure: rest.Rate{PerSecond: 1e6, Burst: 1e6},
}

// forEachDatabase runs fn against SQLite and PostgreSQL.
func forEachDatabase(t *testing.T, fn func(t *testing.T, dbURL string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, testenv.SQLiteURL(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, testenv.PostgresURL(t)) })
}

func newStack(t *testing.T, dbURL string, images service.ImageChecker) *stack {
	t.Helper()
	return newStackWith(t, dbURL, service.Options{Images: images})
}

// newStackWith is newStack with the service's options (its clock, say); the
// stack supplies Events.
func newStackWith(t *testing.T, dbURL string, opts service.Options) *stack {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	hub := events.NewHub(db, events.Options{Logger: quietLog})
	opts.Events = hub
	if opts.Logger == nil {
		opts.Logger = quietLog
	}
	svc := service.New(db, opts)
	// The requests served are written before the database closes.
	t.Cleanup(func() { svc.FlushRequests(context.Background()) })
	keyFile, priv := testenv.Ed25519Keys(t)
	keys, err := auth.LoadPublicKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, db: db, svc: svc, events: hub, secret: bytes.Repeat([]byte("s"), 32), edKey: priv}
	authn := auth.NewAuthenticator(auth.JWTConfig{HS256Secret: s.secret, PublicKeys: keys, Issuer: issuer, Audience: audience}, svc, nil)
	h := rest.New(rest.Options{
		Service:       svc,
		Authenticator: authn,
		GraphQL:       resolvers.NewHandler(svc, resolvers.Options{Authenticate: authn.Authenticate, Introspection: true}),
		Checks:        []rest.Check{{Name: "database", Ping: db.Ping}},
		Viewer:        web.Handler(),
		MaxBodyBytes:  64 << 10,
		Throttles:     &unthrottled,
		Logger:        opts.Logger,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// handle creates a handle owned by owner.
func (s *stack) handle(name, owner string) {
	s.t.Helper()
	if _, err := s.svc.CreateHandle(context.Background(), name, owner, 0, 0); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) member(handle, user string, role coderun.Role) {
	s.t.Helper()
	if err := s.svc.AddMember(context.Background(), handle, user, role); err != nil {
		s.t.Fatal(err)
	}
}

// pat mints a personal access token.
func (s *stack) pat(user, handle string, scopes ...coderun.Scope) string {
	s.t.Helper()
	if len(scopes) == 0 {
		scopes = coderun.AllScopes
	}
	secret, _, err := s.svc.CreateToken(context.Background(), user, handle, scopes, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return secret
}

// jwt signs claims with the HS256 secret.
func (s *stack) jwt(claims jwt.MapClaims) string {
	s.t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.secret)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// userJWT is a valid JWT for user with every scope.
func (s *stack) userJWT(user string) string {
	return s.jwt(jwt.MapClaims{"sub": user, "iss": issuer, "aud": audience, "exp": time.Now().Add(time.Hour).Unix()})
}

// response is what a call returned.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

// do sends a request with an optional bearer token and JSON body.
func (s *stack) do(method, path, token string, body any) response {
	s.t.Helper()
	r, err := s.send(method, path, token, body, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// send is do with extra headers, safe to call from any goroutine.
func (s *stack) send(method, path, token string, body any, header http.Header) (response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}, err
}

// expectProblem asserts an RFC 9457 answer with the given status and code,
// whose requestId is the X-Request-Id header.
func expectProblem(t *testing.T, r response, status int, code string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	p := r.json(t)
	if p["code"] != code {
		t.Fatalf("code %v, want %s; body %s", p["code"], code, r.body)
	}
	id := r.header.Get("X-Request-Id")
	if !strings.HasPrefix(id, "req_") || p["requestId"] != id {
		t.Fatalf("requestId %v, X-Request-Id %q: want the same req_ id", p["requestId"], id)
	}
	for _, k := range []string{"type", "title", "status", "detail", "instance"} {
		if _, ok := p[k]; !ok {
			t.Fatalf("problem lacks %q: %s", k, r.body)
		}
	}
	if int(p["status"].(float64)) != status {
		t.Fatalf("problem status %v, want %d", p["status"], status)
	}
	return p
}

// aDigest is a well-formed digest no image has.
const aDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func runtimeBody(image, digest string) map[string]any {
	return map[string]any{"image": image, "digest": digest}
}
