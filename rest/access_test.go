package rest_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
)

// A caller presents a token; the service says 401, 403 or 404 exactly as the
// contract's authentication section does.
func TestTokenMatrix(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		s.handle("acme", "alice")
		s.handle("globex", "gary")
		const path = "/v2/handles/acme/code-runtimes"
		now := time.Now()
		valid := func() jwt.MapClaims {
			return jwt.MapClaims{"sub": "alice", "iss": issuer, "aud": audience, "exp": now.Add(time.Hour).Unix()}
		}
		with := func(k string, v any) string {
			c := valid()
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
			return s.jwt(c)
		}
		none, err := jwt.NewWithClaims(jwt.SigningMethodNone, valid()).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		// Algorithm confusion: an HS256 token keyed with a public key's PEM.
		rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
		der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, valid()).SignedString(pubPEM)
		edToken, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, valid()).SignedString(s.edKey)
		// An RS256 token from a key the service does not know.
		rsToken, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, valid()).SignedString(rsaKey)

		goodPAT := s.pat("alice", "acme")
		flipped := []byte(goodPAT)
		if flipped[10] == 'a' {
			flipped[10] = 'b'
		} else {
			flipped[10] = 'a'
		}
		revoked := s.pat("alice", "acme")
		if _, err := s.svc.RevokeToken(t.Context(), auth.PATPrefix(revoked)); err != nil {
			t.Fatal(err)
		}
		otherHandlePAT := s.pat("gary", "globex")
		readOnly := s.pat("alice", "acme", coderun.ScopeRunsRead)

		for _, c := range []struct {
			name   string
			token  string
			status int
			code   string
		}{
			{"no token", "", 401, "unauthenticated"},
			{"valid HS256 JWT", s.jwt(valid()), 200, ""},
			{"valid EdDSA JWT", edToken, 200, ""},
			{"expired", with("exp", now.Add(-time.Minute).Unix()), 401, "unauthenticated"},
			{"not yet valid", with("nbf", now.Add(time.Hour).Unix()), 401, "unauthenticated"},
			{"wrong iss", with("iss", "someone-else"), 401, "unauthenticated"},
			{"wrong aud", with("aud", "someone-else"), 401, "unauthenticated"},
			{"no sub", with("sub", nil), 401, "unauthenticated"},
			{"no exp", with("exp", nil), 401, "unauthenticated"},
			{"alg none", none, 401, "unauthenticated"},
			{"HS256 keyed with a public key", confused, 401, "unauthenticated"},
			{"RS256 from an unknown key", rsToken, 401, "unauthenticated"},
			{"garbage", "not-a-token", 401, "unauthenticated"},
			{"valid PAT", goodPAT, 200, ""},
			{"PAT with a bad checksum", string(flipped), 401, "unauthenticated"},
			{"revoked PAT", revoked, 401, "unauthenticated"},
			{"PAT of another handle", otherHandlePAT, 404, "handle_not_found"},
			{"PAT without the scope", readOnly, 403, "insufficient_scope"},
			{"JWT whose scope claim lacks it", with("scope", "runs:read runs:write"), 403, "insufficient_scope"},
			{"JWT of a non-member", s.userJWT("mallory"), 404, "handle_not_found"},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := s.do("GET", path, c.token, nil)
				if c.status == 200 {
					if r.status != 200 {
						t.Fatalf("status %d, want 200: %s", r.status, r.body)
					}
					return
				}
				expectProblem(t, r, c.status, c.code)
				if c.status == 401 && r.header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			})
		}
	})
}

// Every runtime route answers 404 to another tenant, 403 forbidden to a role
// too low to write, and 403 insufficient_scope to a token without the scope.
func TestRuntimeRoutesTenancy(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		s.handle("acme", "alice")
		s.handle("globex", "gary")
		s.member("acme", "victor", coderun.RoleViewer)
		s.member("acme", "dora", coderun.RoleDeveloper)
		alice := s.userJWT("alice")
		if r := s.do("PUT", "/v2/handles/acme/code-runtimes/py", alice, runtimeBody("example/py:1", aDigest)); r.status != 201 {
			t.Fatalf("PUT: %d %s", r.status, r.body)
		}
		routes := []struct {
			method, path string
			body         any
			write        bool
		}{
			{"GET", "/v2/handles/acme/code-runtimes", nil, false},
			{"GET", "/v2/handles/acme/code-runtimes/py", nil, false},
			{"PUT", "/v2/handles/acme/code-runtimes/py", runtimeBody("example/py:2", aDigest), true},
			{"POST", "/v2/handles/acme/code-runtimes/py/validate-image", nil, true},
		}
		gary := s.userJWT("gary")
		garyPAT := s.pat("gary", "globex")
		victor := s.userJWT("victor")
		dora := s.userJWT("dora")
		for _, rt := range routes {
			t.Run(rt.method+" "+rt.path, func(t *testing.T) {
				expectProblem(t, s.do(rt.method, rt.path, gary, rt.body), 404, "handle_not_found")
				expectProblem(t, s.do(rt.method, rt.path, garyPAT, rt.body), 404, "handle_not_found")
				// globex's own path for acme's runtime key: not found, not leaked.
				other := "/v2/handles/globex" + rt.path[len("/v2/handles/acme"):]
				if rt.method == "GET" && other != "/v2/handles/globex/code-runtimes" {
					expectProblem(t, s.do(rt.method, other, gary, rt.body), 404, "runtime_not_found")
				}
				if rt.write {
					expectProblem(t, s.do(rt.method, rt.path, victor, rt.body), 403, "forbidden")
					expectProblem(t, s.do(rt.method, rt.path, dora, rt.body), 403, "forbidden")
					noWrite := s.pat("alice", "acme", coderun.ScopeRuntimesRead)
					expectProblem(t, s.do(rt.method, rt.path, noWrite, rt.body), 403, "insufficient_scope")
				} else {
					if r := s.do(rt.method, rt.path, victor, nil); r.status != http.StatusOK {
						t.Fatalf("viewer read: %d %s", r.status, r.body)
					}
					noRead := s.pat("alice", "acme", coderun.ScopeRunsRead)
					expectProblem(t, s.do(rt.method, rt.path, noRead, nil), 403, "insufficient_scope")
				}
			})
		}
	})
}
