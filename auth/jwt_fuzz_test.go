package auth_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
)

// FuzzJWT signs arbitrary headers and claims with the right key, so that,
// unlike FuzzAuthenticate's mutated strings, it reaches the checks past the
// signature: algorithms, issuer, audience, times, subject and scopes. A token
// is accepted only with HS256, this issuer and audience, a subject and live
// times, and the principal carries that subject.
func FuzzJWT(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	exp, iat := now.Add(time.Hour).Unix(), now.Unix()
	for _, s := range []struct{ header, claims string }{
		{`{"alg":"HS256","typ":"JWT"}`, `{"iss":"coderun","aud":"coderun","sub":"alice","exp":` + itoa(exp) + `,"iat":` + itoa(iat) + `}`},
		{`{"alg":"HS256"}`, `{"iss":"coderun","aud":["coderun","x"],"sub":"bob","exp":` + itoa(exp) + `,"scope":"runtimes:read nope"}`},
		{`{"alg":"none"}`, `{"iss":"coderun","aud":"coderun","sub":"alice","exp":` + itoa(exp) + `}`},
		{`{"alg":"HS512"}`, `{"iss":"coderun","aud":"coderun","sub":"alice","exp":` + itoa(exp) + `}`},
		{`{"alg":"HS256"}`, `{"iss":"coderun","aud":"coderun","sub":"","exp":1}`},
		{`{"alg":"HS256"}`, `{"iss":"coderun","aud":"coderun","sub":"alice","exp":"soon","nbf":1e300}`},
		{`{"alg":"HS256"}`, `[]`},
	} {
		f.Add(s.header, s.claims)
	}
	secret := []byte(strings.Repeat("k", 32))
	a := auth.NewAuthenticator(auth.JWTConfig{HS256Secret: secret, Issuer: "coderun", Audience: "coderun"}, nil, func() time.Time { return now })
	enc := base64.RawURLEncoding
	f.Fuzz(func(t *testing.T, header, claims string) {
		signed := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(signed))
		token := signed + "." + enc.EncodeToString(mac.Sum(nil))

		p, err := a.Authenticate(context.Background(), "Bearer "+token)
		if err != nil {
			if p != nil || coderun.ErrorCode(err) != coderun.EUnauthenticated {
				t.Fatalf("refusal %v with principal %+v", err, p)
			}
			return
		}
		var h struct{ Alg string }
		var c struct {
			Sub string
			Iss string
		}
		if json.Unmarshal([]byte(header), &h) != nil || h.Alg != "HS256" {
			t.Fatalf("accepted header %q", header)
		}
		if json.Unmarshal([]byte(claims), &c) != nil || c.Iss != "coderun" || c.Sub == "" || p.UserID != c.Sub {
			t.Fatalf("accepted claims %q as %+v", claims, p)
		}
		if p.Kind != coderun.TokenJWT {
			t.Fatalf("kind %q", p.Kind)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
