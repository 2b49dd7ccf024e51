package rest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// clock is a settable time for the throttles.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// throttledStack is a stack with small buckets on a clock the test moves.
func throttledStack(t *testing.T, rates rest.Throttles) (*stack, *clock) {
	return throttledStackBehind(t, rates, nil)
}

// throttledStackBehind is throttledStack trusting the proxies given.
func throttledStackBehind(t *testing.T, rates rest.Throttles, proxies []netip.Prefix) (*stack, *clock) {
	s := newStack(t, "sqlite://"+t.TempDir()+"/db", nil)
	db, err := store.Open(context.Background(), "sqlite://"+t.TempDir()+"/db2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	svc := service.New(db, service.Options{Logger: quietLog})
	// The requests served are written before the database closes.
	t.Cleanup(func() { svc.FlushRequests(context.Background()) })
	c := &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	authn := auth.NewAuthenticator(auth.JWTConfig{HS256Secret: s.secret, Issuer: issuer, Audience: audience}, svc, nil)
	srv := httptest.NewServer(rest.New(rest.Options{Service: svc, Authenticator: authn, Logger: quietLog, Throttles: &rates, Now: c.now, TrustedProxies: proxies}))
	t.Cleanup(srv.Close)
	s.url, s.svc, s.db = srv.URL, svc, db
	return s, c
}

var rateLimitHeader = regexp.MustCompile(`^"(\w[\w-]*)";r=(\d+);t=(\d+)$`)

// rateLimit parses the RateLimit header: remaining and seconds to reset.
func rateLimit(t *testing.T, r response) (class string, remaining, reset int) {
	t.Helper()
	m := rateLimitHeader.FindStringSubmatch(r.header.Get("RateLimit"))
	if m == nil || r.header.Get("RateLimit-Policy") == "" || r.header.Get("X-RateLimit-Limit") == "" {
		t.Fatalf("rate-limit headers missing or malformed: %v", r.header)
	}
	remaining, _ = strconv.Atoi(m[2])
	reset, _ = strconv.Atoi(m[3])
	if r.header.Get("X-RateLimit-Remaining") != m[2] || r.header.Get("X-RateLimit-Reset") != m[3] {
		t.Fatalf("X-RateLimit-* disagree with RateLimit: %v", r.header)
	}
	return m[1], remaining, reset
}

func TestThrottles(t *testing.T) {
	s, c := throttledStack(t, rest.Throttles{
		Read: rest.Rate{PerSecond: 1, Burst: 3}, Write: rest.Rate{PerSecond: 0.5, Burst: 2},
		GraphQL: rest.Rate{PerSecond: 1, Burst: 3}, AuthFailure: rest.Rate{PerSecond: 0.1, Burst: 2},
	})
	s.handle("acme", "alice")
	tok := s.userJWT("alice")
	const path = "/v2/handles/acme/code-runtimes"

	t.Run("a burst past the bucket is refused with Retry-After matching RateLimit", func(t *testing.T) {
		for want := 2; want >= 0; want-- {
			r := s.do("GET", path, tok, nil)
			if r.status != 200 {
				t.Fatalf("request within the burst: %d %s", r.status, r.body)
			}
			if class, remaining, _ := rateLimit(t, r); class != "read" || remaining != want {
				t.Fatalf("class %s remaining %d, want read %d", class, remaining, want)
			}
		}
		r := s.do("GET", path, tok, nil)
		p := expectProblem(t, r, 429, "rate_limited")
		_, remaining, reset := rateLimit(t, r)
		if remaining != 0 || reset < 1 || r.header.Get("Retry-After") != strconv.Itoa(reset) || p["retryAfter"] != float64(reset) {
			t.Fatalf("429 with RateLimit r=%d t=%d, Retry-After %q, retryAfter %v", remaining, reset, r.header.Get("Retry-After"), p["retryAfter"])
		}
		// Writes have a bucket of their own.
		if r := s.do("PUT", path+"/x", tok, runtimeBody("x", aDigest)); r.status != 201 {
			t.Fatalf("a write while reads are throttled: %d %s", r.status, r.body)
		}
		c.add(time.Duration(reset) * time.Second)
		if r := s.do("GET", path, tok, nil); r.status != 200 {
			t.Fatalf("after Retry-After: %d %s", r.status, r.body)
		}
	})

	t.Run("unrouted and public answers carry the headers too", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/v2/nowhere"} {
			rateLimit(t, s.do("GET", p, "", nil))
		}
	})

	t.Run("failed authentications are throttled per address, valid tokens included", func(t *testing.T) {
		c.add(time.Hour)
		for range 2 {
			expectProblem(t, s.do("GET", path, "bad-token", nil), 401, "unauthenticated")
		}
		expectProblem(t, s.do("GET", path, "bad-token", nil), 429, "rate_limited")
		// Not even a good token is looked at until the address may try again.
		expectProblem(t, s.do("GET", path, tok, nil), 429, "rate_limited")
		c.add(10 * time.Second)
		if r := s.do("GET", path, tok, nil); r.status != 200 {
			t.Fatalf("after the wait: %d %s", r.status, r.body)
		}
	})

	t.Run("callers have buckets of their own", func(t *testing.T) {
		c.add(time.Hour)
		s.member("acme", "bob", 1)
		bob := s.userJWT("bob")
		for range 3 {
			s.do("GET", path, tok, nil)
		}
		expectProblem(t, s.do("GET", path, tok, nil), 429, "rate_limited")
		if r := s.do("GET", path, bob, nil); r.status != 200 {
			t.Fatalf("another caller: %d %s", r.status, fmt.Sprint(string(r.body)))
		}
	})
}

// A path the mux would redirect to its canonical form (a "." segment, a
// doubled slash) is throttled like any other and refused with a pointer to
// the canonical path; its route's handler never runs.
func TestNonCanonicalPathsAreThrottled(t *testing.T) {
	s, _ := throttledStack(t, rest.Throttles{
		Read: rest.Rate{PerSecond: 0.001, Burst: 2}, Write: rest.Rate{PerSecond: 0.001, Burst: 2},
		GraphQL: rest.Rate{PerSecond: 1, Burst: 3}, AuthFailure: rest.Rate{PerSecond: 0.1, Burst: 2},
	})
	s.handle("acme", "alice")
	tok := s.userJWT("alice")
	for i, path := range []string{"/v2/handles/acme/./code-runtimes", "/v2/handles/acme//code-runtimes"} {
		r := s.do("GET", path, tok, nil)
		p := expectProblem(t, r, http.StatusNotFound, "not_found")
		if !strings.Contains(fmt.Sprint(p["detail"]), "/v2/handles/acme/code-runtimes") {
			t.Fatalf("%s: detail %q does not name the canonical path", path, p["detail"])
		}
		if _, remaining, _ := rateLimit(t, r); remaining != 1-i {
			t.Fatalf("%s: %d remaining, want %d", path, remaining, 1-i)
		}
	}
	expectProblem(t, s.do("GET", "/v2/handles/acme/./code-runtimes", tok, nil), http.StatusTooManyRequests, "rate_limited")
}

// Every response carries the rate-limit headers: a 401 those of its client
// address's failed authentications, a 413 its route's.
func TestRateLimitHeadersOnRefusals(t *testing.T) {
	s, _ := throttledStack(t, rest.Throttles{
		Read: rest.Rate{PerSecond: 1, Burst: 5}, Write: rest.Rate{PerSecond: 1, Burst: 5},
		GraphQL: rest.Rate{PerSecond: 1, Burst: 5}, AuthFailure: rest.Rate{PerSecond: 0.1, Burst: 3},
	})
	s.handle("acme", "alice")
	r := s.do("GET", "/v2/handles/acme/code-runtimes", "crp_nope", nil)
	expectProblem(t, r, http.StatusUnauthorized, "unauthenticated")
	if class, remaining, _ := rateLimit(t, r); class != "auth-failure" || remaining != 2 {
		t.Fatalf("401: %s with %d remaining, want auth-failure with 2", class, remaining)
	}
	big := map[string]any{"image": strings.Repeat("x", 2<<20), "digest": aDigest}
	r = s.do("PUT", "/v2/handles/acme/code-runtimes/sh", s.userJWT("alice"), big)
	expectProblem(t, r, http.StatusRequestEntityTooLarge, "payload_too_large")
	if class, _, _ := rateLimit(t, r); class != "write" {
		t.Fatalf("413: class %s, want write", class)
	}
	// Buckets are per route: reading one route does not use up another.
	tok := s.userJWT("alice")
	for range 5 {
		s.do("GET", "/v2/handles/acme/code-runtimes", tok, nil)
	}
	expectProblem(t, s.do("GET", "/v2/handles/acme/code-runtimes", tok, nil), http.StatusTooManyRequests, "rate_limited")
	if r := s.do("GET", "/v2/handles/acme/code-runs", tok, nil); r.status != http.StatusOK {
		t.Fatalf("another route after one's bucket ran dry: %d %s", r.status, r.body)
	}
}

// Behind a trusted load balancer each client has its own auth-failure bucket,
// named by X-Forwarded-For; a client that is not a trusted proxy cannot pick
// its address with the header.
func TestClientAddressBehindTrustedProxies(t *testing.T) {
	rates := rest.Throttles{
		Read: rest.Rate{PerSecond: 100, Burst: 100}, Write: rest.Rate{PerSecond: 100, Burst: 100},
		GraphQL: rest.Rate{PerSecond: 100, Burst: 100}, AuthFailure: rest.Rate{PerSecond: 0.001, Burst: 2},
	}
	from := func(s *stack, forwarded string) response {
		r, err := s.send("GET", "/v2/handles/acme/code-runtimes", "crp_nope", nil, http.Header{"X-Forwarded-For": {forwarded}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	behind, _ := throttledStackBehind(t, rates, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	for range 2 {
		expectProblem(t, from(behind, "198.51.100.7, 127.0.0.2"), http.StatusUnauthorized, "unauthenticated")
	}
	expectProblem(t, from(behind, "198.51.100.7"), http.StatusTooManyRequests, "rate_limited")
	expectProblem(t, from(behind, "203.0.113.9"), http.StatusUnauthorized, "unauthenticated")

	direct, _ := throttledStack(t, rates)
	for i := range 2 {
		expectProblem(t, from(direct, fmt.Sprint("198.51.100.", i)), http.StatusUnauthorized, "unauthenticated")
	}
	expectProblem(t, from(direct, "203.0.113.9"), http.StatusTooManyRequests, "rate_limited")
}
