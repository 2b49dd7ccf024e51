package auth_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
)

// memTokens is an in-memory TokenStore that counts what the authenticator asks.
type memTokens struct {
	mu       sync.Mutex
	byHash   map[string]coderun.AccessToken
	lookups  int
	touches  []time.Time
	failWith error // returned by AccessTokenByHash when set
	touchErr error
}

func newMemTokens(tokens map[string]coderun.AccessToken) *memTokens {
	s := &memTokens{byHash: make(map[string]coderun.AccessToken)}
	for secret, tok := range tokens {
		tok.Hash = auth.HashPAT(secret)
		tok.Prefix = auth.PATPrefix(secret)
		s.byHash[string(tok.Hash)] = tok
	}
	return s
}

func (s *memTokens) AccessTokenByHash(_ context.Context, hash []byte) (coderun.AccessToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	if s.failWith != nil {
		return coderun.AccessToken{}, s.failWith
	}
	tok, ok := s.byHash[string(hash)]
	if !ok {
		return coderun.AccessToken{}, coderun.Errorf(coderun.ETokenNotFound, "access token not found")
	}
	return tok, nil
}

func (s *memTokens) TouchAccessToken(_ context.Context, id string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touches = append(s.touches, at)
	for h, tok := range s.byHash {
		if tok.ID == id {
			tok.LastUsedAt = &at
			s.byHash[h] = tok
		}
	}
	return s.touchErr
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testNow is a whole second, as JWT times are.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// Tokens in the store, by secret (all well formed).
const (
	patValid   = knownPAT
	patRevoked = knownPaddedPAT
	patExpired = knownLongPAT
	patUnknown = "crp_000000000000000000000000000000" + "2C8GjS"
)

func patFixture() (*memTokens, *clock) {
	revokedAt := testNow.Add(-time.Hour)
	store := newMemTokens(map[string]coderun.AccessToken{
		patValid: {ID: "tok_valid", UserID: "alice", Handle: "acme",
			Scopes:    []coderun.Scope{coderun.ScopeRunsRead, coderun.ScopeRunsWrite},
			ExpiresAt: testNow.Add(24 * time.Hour)},
		patRevoked: {ID: "tok_revoked", UserID: "alice", Handle: "acme",
			Scopes: coderun.AllScopes, ExpiresAt: testNow.Add(24 * time.Hour), RevokedAt: &revokedAt},
		patExpired: {ID: "tok_expired", UserID: "alice", Handle: "acme",
			Scopes: coderun.AllScopes, ExpiresAt: testNow},
	})
	return store, &clock{t: testNow}
}

func TestAuthenticatePAT(t *testing.T) {
	store, clk := patFixture()
	a := auth.NewAuthenticator(auth.JWTConfig{}, store, clk.Now)
	ctx := context.Background()

	p, err := a.Authenticate(ctx, "Bearer "+patValid)
	if err != nil {
		t.Fatal(err)
	}
	want := coderun.Principal{UserID: "alice", Kind: coderun.TokenPAT, TokenID: "tok_valid",
		Scopes: []coderun.Scope{coderun.ScopeRunsRead, coderun.ScopeRunsWrite}, Handle: "acme"}
	if !principalsEqual(*p, want) {
		t.Fatalf("principal = %+v, want %+v", *p, want)
	}
	if len(store.touches) != 1 || !store.touches[0].Equal(testNow) {
		t.Fatalf("touches = %v, want one at %v", store.touches, testNow)
	}

	// Within a minute of the last recorded use nothing is written; after it, it is.
	clk.Advance(59 * time.Second)
	if _, err := a.Authenticate(ctx, "bearer "+patValid); err != nil {
		t.Fatal(err)
	}
	if len(store.touches) != 1 {
		t.Fatalf("touched %d times within a minute, want 1", len(store.touches))
	}
	clk.Advance(time.Second)
	if _, err := a.Authenticate(ctx, "BEARER "+patValid); err != nil {
		t.Fatal(err)
	}
	if len(store.touches) != 2 || !store.touches[1].Equal(testNow.Add(time.Minute)) {
		t.Fatalf("touches = %v, want a second one a minute later", store.touches)
	}
}

func TestAuthenticatePATRefusals(t *testing.T) {
	cases := []struct {
		name, token, want string
		lookups           int // store queries expected: a malformed token costs none
	}{
		{"unknown", patUnknown, "unknown access token", 1},
		{"revoked", patRevoked, "token revoked", 1},
		{"expired at the instant of expiry", patExpired, "token expired", 1},
		{"bad checksum", patValid[:20] + flip(patValid[20]) + patValid[21:], "checksum mismatch", 0},
		{"too short", patValid[:39], "wrong length", 0},
		{"wrong prefix", "crx_" + patValid[4:], "invalid token", 0}, // not a PAT, so tried as a JWT (none configured)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store, clk := patFixture()
			a := auth.NewAuthenticator(auth.JWTConfig{}, store, clk.Now)
			p, err := a.Authenticate(context.Background(), "Bearer "+tc.token)
			if p != nil {
				t.Fatalf("authenticated %+v", *p)
			}
			assertUnauthenticated(t, err, tc.want, tc.token)
			if store.lookups != tc.lookups {
				t.Fatalf("store queried %d times, want %d", store.lookups, tc.lookups)
			}
			if len(store.touches) != 0 {
				t.Fatal("a refused token was recorded as used")
			}
		})
	}
}

func TestAuthenticatePATStoreFailureIsNotTheCallersFault(t *testing.T) {
	store, clk := patFixture()
	store.failWith = errors.New("database is locked")
	a := auth.NewAuthenticator(auth.JWTConfig{}, store, clk.Now)

	_, err := a.Authenticate(context.Background(), "Bearer "+patValid)
	if err == nil || coderun.ErrorCode(err) != coderun.EInternal {
		t.Fatalf("err = %v, want an internal error", err)
	}
	if !errors.Is(err, store.failWith) {
		t.Fatalf("err = %v, want it to wrap the store's error", err)
	}
	assertNoSecret(t, err, patValid)
}

func TestAuthenticatePATSurvivesAFailedTouch(t *testing.T) {
	store, clk := patFixture()
	store.touchErr = errors.New("disk full")
	a := auth.NewAuthenticator(auth.JWTConfig{}, store, clk.Now)

	p, err := a.Authenticate(context.Background(), "Bearer "+patValid)
	if err != nil || p.UserID != "alice" {
		t.Fatalf("Authenticate = %v, %v; want alice despite the failed touch", p, err)
	}
}

func TestAuthenticateMalformedHeader(t *testing.T) {
	store, clk := patFixture()
	a := auth.NewAuthenticator(auth.JWTConfig{}, store, clk.Now)
	cases := map[string]string{
		"":                          "missing bearer token",
		"   ":                       "missing bearer token",
		"Basic YWxpY2U6c2VjcmV0":    "malformed Authorization header",
		"Bearer":                    "malformed Authorization header",
		"Bearer ":                   "malformed Authorization header",
		patValid:                    "malformed Authorization header",
		"Bearer " + patValid + " x": "malformed Authorization header",
		"Token " + patValid:         "malformed Authorization header",
	}
	for header, want := range cases {
		_, err := a.Authenticate(context.Background(), header)
		assertUnauthenticated(t, err, want, patValid)
	}
	if store.lookups != 0 {
		t.Fatalf("store queried %d times for malformed headers", store.lookups)
	}
}

func TestBearerToken(t *testing.T) {
	long := strings.Repeat("a", 8<<10)
	cases := []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BeArEr abc", "abc", true},
		{"  Bearer   abc\t", "abc", true},
		{"Bearer eyJ.eyJ.sig-_", "eyJ.eyJ.sig-_", true},
		{"Bearer abc+/~==", "abc+/~==", true},
		{"Bearer " + long, long, true},
		{"Bearer " + long + "a", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearerabc", "", false},
		{"Basic abc", "", false},
		{"Bearer a b", "", false},
		{"Bearer ==", "", false},
		{"Bearer a=b", "", false},
		{"Bearer a\x00b", "", false},
		{"Bearer \tabc", "", false},
		{"", "", false},
	}
	for _, tc := range cases {
		token, ok := auth.BearerToken(tc.header)
		if token != tc.token || ok != tc.ok {
			t.Errorf("BearerToken(%.40q) = %.20q, %v; want %.20q, %v", tc.header, token, ok, tc.token, tc.ok)
		}
	}
}

func FuzzAuthenticate(f *testing.F) {
	secret := []byte(strings.Repeat("k", 32))
	jwtValid, err := auth.SignHS256(secret, "coderun", "coderun", "alice", nil, time.Hour, testNow)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"Bearer " + patValid, "Bearer " + patRevoked, "Bearer " + patUnknown, "Bearer " + jwtValid,
		"Bearer " + jwtValid[:len(jwtValid)-2], "bearer crp_", "Bearer a.b.c", "Bearer ..", "Basic x",
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.", "",
	} {
		f.Add(s)
	}
	store, clk := patFixture()
	a := auth.NewAuthenticator(auth.JWTConfig{HS256Secret: secret, Issuer: "coderun", Audience: "coderun"}, store, clk.Now)
	f.Fuzz(func(t *testing.T, header string) {
		p, err := a.Authenticate(context.Background(), header)
		if err == nil {
			if p == nil || p.UserID == "" {
				t.Fatalf("authenticated without a user: %+v", p)
			}
			return
		}
		if p != nil {
			t.Fatal("returned a principal with an error")
		}
		if code := coderun.ErrorCode(err); code != coderun.EUnauthenticated {
			t.Fatalf("error code %q, want %q", code, coderun.EUnauthenticated)
		}
		if token, ok := auth.BearerToken(header); ok {
			assertNoSecret(t, err, token)
		}
	})
}

// assertUnauthenticated checks err is an unauthenticated *coderun.Error whose
// message contains want and reveals nothing of secret.
func assertUnauthenticated(t *testing.T, err error, want, secret string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	if code := coderun.ErrorCode(err); code != coderun.EUnauthenticated {
		t.Fatalf("error %v has code %q, want %q", err, code, coderun.EUnauthenticated)
	}
	if msg := coderun.ErrorMessage(err); !strings.Contains(msg, want) {
		t.Fatalf("message %q, want it to contain %q", msg, want)
	}
	assertNoSecret(t, err, secret)
}

// assertNoSecret fails if err's text holds secret or any 12 characters of it
// (enough to rule out echoing a piece of it; our messages are plain words).
func assertNoSecret(t *testing.T, err error, secret string) {
	t.Helper()
	msg := err.Error()
	const window = 12
	if len(secret) < window {
		return
	}
	for i := 0; i+window <= len(secret); i++ {
		if strings.Contains(msg, secret[i:i+window]) {
			t.Fatalf("error %q reveals part of the secret", msg)
		}
	}
}

// flip returns a base62 digit other than c.
func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func principalsEqual(a, b coderun.Principal) bool {
	return a.UserID == b.UserID && a.Kind == b.Kind && a.TokenID == b.TokenID &&
		a.Handle == b.Handle && slices.Equal(a.Scopes, b.Scopes)
}
