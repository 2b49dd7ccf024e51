package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer   = "https://id.example.test"
	testAudience = "coderun"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// signingKeys are generated once: RSA key generation is slow under -race.
type signingKeys struct {
	rsaPKIX, rsaPKCS1, rsaStranger *rsa.PrivateKey
	ed                             ed25519.PrivateKey
	// pemFile holds the public halves of rsaPKIX, rsaPKCS1 and ed.
	pemFile []byte
	// rsaPKIXPEM is the PEM block of rsaPKIX's public key alone, as an
	// attacker could fetch it and misuse it as an HMAC secret.
	rsaPKIXPEM []byte
}

var testKeys = sync.OnceValue(func() *signingKeys {
	k := &signingKeys{
		rsaPKIX:     mustRSA(2048),
		rsaPKCS1:    mustRSA(2048),
		rsaStranger: mustRSA(2048),
	}
	_, k.ed, _ = ed25519.GenerateKey(rand.Reader)
	k.rsaPKIXPEM = pemPKIX(&k.rsaPKIX.PublicKey)
	var file []byte
	file = append(file, "# issuer signing keys, rotated yearly\n"...)
	file = append(file, k.rsaPKIXPEM...)
	file = append(file, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsaPKCS1.PublicKey)})...)
	file = append(file, "\n"...)
	file = append(file, pemPKIX(k.ed.Public())...)
	k.pemFile = file
	return k
})

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func pemPKIX(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadedKeys loads the public keys from a PEM file, as the server does.
func loadedKeys(t *testing.T) []crypto.PublicKey {
	t.Helper()
	keys, err := auth.LoadPublicKeys(writeFile(t, testKeys().pemFile))
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// claimsWith returns valid claims for alice, changed by edits (a nil value
// deletes the claim).
func claimsWith(edits map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss": testIssuer,
		"aud": testAudience,
		"sub": "alice",
		"exp": testNow.Add(time.Hour).Unix(),
		"iat": testNow.Unix(),
		"jti": "jti-1",
	}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthenticateJWT(t *testing.T) {
	k := testKeys()
	keys := loadedKeys(t)
	full := auth.JWTConfig{HS256Secret: testSecret, PublicKeys: keys, Issuer: testIssuer, Audience: testAudience}
	secretOnly := auth.JWTConfig{HS256Secret: testSecret, Issuer: testIssuer, Audience: testAudience}
	keysOnly := auth.JWTConfig{PublicKeys: keys, Issuer: testIssuer, Audience: testAudience}
	withLeeway := full
	withLeeway.Leeway = 30 * time.Second

	noneToken := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsWith(nil))
	valid := sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(nil))
	header, _, _ := strings.Cut(valid, ".")
	// Claims swapped for another user's, signature kept.
	tampered := header + "." + strings.Split(sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"sub": "mallory"})), ".")[1] +
		"." + strings.Split(valid, ".")[2]

	cases := []struct {
		name   string
		cfg    auth.JWTConfig
		token  string
		want   string // error message part; "" means accepted
		scopes []coderun.Scope
	}{
		{name: "HS256", cfg: full, token: valid, scopes: coderun.AllScopes},
		{name: "RS256, PKIX key", cfg: full, token: sign(t, jwt.SigningMethodRS256, k.rsaPKIX, claimsWith(nil)), scopes: coderun.AllScopes},
		{name: "RS256, PKCS #1 key", cfg: full, token: sign(t, jwt.SigningMethodRS256, k.rsaPKCS1, claimsWith(nil)), scopes: coderun.AllScopes},
		{name: "EdDSA", cfg: full, token: sign(t, jwt.SigningMethodEdDSA, k.ed, claimsWith(nil)), scopes: coderun.AllScopes},
		{name: "RS256 with keys only", cfg: keysOnly, token: sign(t, jwt.SigningMethodRS256, k.rsaPKIX, claimsWith(nil)), scopes: coderun.AllScopes},
		{name: "aud list containing ours", cfg: full, scopes: coderun.AllScopes,
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"aud": []string{"billing", testAudience}}))},
		{name: "scope claim narrows, unknown ignored", cfg: full,
			token:  sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"scope": "runtimes:read openid runs:read runs:read"})),
			scopes: []coderun.Scope{coderun.ScopeRunsRead, coderun.ScopeRuntimesRead}},
		{name: "empty scope claim grants nothing", cfg: full, scopes: []coderun.Scope{},
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"scope": ""}))},
		{name: "expired within leeway", cfg: withLeeway, scopes: coderun.AllScopes,
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"exp": testNow.Add(-10 * time.Second).Unix()}))},

		{name: "expired", cfg: full, want: "token expired",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"exp": testNow.Add(-time.Second).Unix()}))},
		{name: "expired beyond leeway", cfg: withLeeway, want: "token expired",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"exp": testNow.Add(-31 * time.Second).Unix()}))},
		{name: "not yet valid", cfg: full, want: "token not valid yet",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"nbf": testNow.Add(time.Minute).Unix()}))},
		{name: "issued in the future", cfg: full, want: "token issued in the future",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"iat": testNow.Add(time.Minute).Unix()}))},
		{name: "wrong iss", cfg: full, want: "wrong issuer",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"iss": "https://evil.test"}))},
		{name: "missing iss", cfg: full, want: "missing a required claim",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"iss": nil}))},
		{name: "wrong aud", cfg: full, want: "wrong audience",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"aud": "billing"}))},
		{name: "missing aud", cfg: full, want: "missing a required claim",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"aud": nil}))},
		{name: "missing sub", cfg: full, want: "token has no subject",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"sub": nil}))},
		{name: "missing exp", cfg: full, want: "missing a required claim",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"exp": nil}))},
		{name: "scope claim not a string", cfg: full, want: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"scope": []string{"runs:read"}}))},
		{name: "alg none", cfg: full, token: noneToken, want: "invalid token signature"},
		{name: "tampered claims", cfg: full, token: tampered, want: "invalid token signature"},
		{name: "wrong HS256 secret", cfg: full, want: "invalid token signature",
			token: sign(t, jwt.SigningMethodHS256, []byte("ffffffffffffffffffffffffffffffff"), claimsWith(nil))},
		{name: "HS512 with the secret (algorithm pinned)", cfg: full, want: "invalid token signature",
			token: sign(t, jwt.SigningMethodHS512, testSecret, claimsWith(nil))},
		{name: "HS256 keyed with the RSA public key PEM", cfg: full, want: "invalid token signature",
			token: sign(t, jwt.SigningMethodHS256, k.rsaPKIXPEM, claimsWith(nil))},
		{name: "HS256 keyed with the RSA public key PEM, no secret configured", cfg: keysOnly, want: "invalid token signature",
			token: sign(t, jwt.SigningMethodHS256, k.rsaPKIXPEM, claimsWith(nil))},
		{name: "RS256 when only a secret is configured", cfg: secretOnly, want: "invalid token signature",
			token: sign(t, jwt.SigningMethodRS256, k.rsaPKIX, claimsWith(nil))},
		{name: "RS256 by an unknown key", cfg: full, want: "invalid token signature",
			token: sign(t, jwt.SigningMethodRS256, k.rsaStranger, claimsWith(nil))},
		{name: "PS256 by a configured RSA key", cfg: full, want: "invalid token signature",
			token: sign(t, jwt.SigningMethodPS256, k.rsaPKIX, claimsWith(nil))},
		{name: "not a JWT", cfg: full, token: "a.b.c", want: "malformed token"},
		{name: "one segment", cfg: full, token: "eyJhbGciOiJIUzI1NiJ9", want: "malformed token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := auth.NewAuthenticator(tc.cfg, newMemTokens(nil), func() time.Time { return testNow })
			p, err := a.Authenticate(context.Background(), "Bearer "+tc.token)
			if tc.want != "" {
				if p != nil {
					t.Fatalf("accepted as %+v", *p)
				}
				assertUnauthenticated(t, err, tc.want, tc.token)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := coderun.Principal{UserID: "alice", Kind: coderun.TokenJWT, TokenID: "jti-1", Scopes: tc.scopes}
			if !principalsEqual(*p, want) {
				t.Fatalf("principal = %+v, want %+v", *p, want)
			}
		})
	}
}

func TestInvalidJWTConfigAcceptsNoJWT(t *testing.T) {
	// Without an expected audience the library would skip the aud check; the
	// authenticator must refuse instead of accepting a token meant for anyone.
	cfg := auth.JWTConfig{HS256Secret: testSecret, Issuer: testIssuer}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "audience is required") {
		t.Fatalf("Validate() = %v, want audience is required", err)
	}
	a := auth.NewAuthenticator(cfg, newMemTokens(nil), func() time.Time { return testNow })
	token := sign(t, jwt.SigningMethodHS256, testSecret, claimsWith(map[string]any{"aud": nil}))
	_, err := a.Authenticate(context.Background(), "Bearer "+token)
	assertUnauthenticated(t, err, "invalid token", token)
}

func TestJWTConfigValidate(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  auth.JWTConfig
		want string // "" means valid
	}{
		{"secret and keys", auth.JWTConfig{HS256Secret: testSecret, PublicKeys: loadedKeys(t), Issuer: "i", Audience: "a"}, ""},
		{"no keys at all (PATs only)", auth.JWTConfig{Issuer: "i", Audience: "a"}, ""},
		{"no issuer", auth.JWTConfig{HS256Secret: testSecret, Audience: "a"}, "issuer is required"},
		{"short secret", auth.JWTConfig{HS256Secret: []byte("devsecret"), Issuer: "i", Audience: "a"}, "at least 32"},
		{"ECDSA key", auth.JWTConfig{PublicKeys: []crypto.PublicKey{&ecKey.PublicKey}, Issuer: "i", Audience: "a"}, "unsupported key type"},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil {
			t.Errorf("%s: Validate() = %v, want nil", tc.name, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestSignHS256(t *testing.T) {
	clk := &clock{t: testNow}
	a := auth.NewAuthenticator(auth.JWTConfig{HS256Secret: testSecret, Issuer: testIssuer, Audience: testAudience}, newMemTokens(nil), clk.Now)
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		scopes []coderun.Scope
		want   []coderun.Scope
	}{
		{"no scope claim", nil, coderun.AllScopes},
		{"no scopes", []coderun.Scope{}, []coderun.Scope{}},
		{"some scopes", []coderun.Scope{coderun.ScopeSupportWrite, coderun.ScopeRunsRead}, []coderun.Scope{coderun.ScopeRunsRead, coderun.ScopeSupportWrite}},
	} {
		token, err := auth.SignHS256(testSecret, testIssuer, testAudience, "bob", tc.scopes, time.Hour, testNow)
		if err != nil {
			t.Fatal(err)
		}
		p, err := a.Authenticate(ctx, "Bearer "+token)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if p.UserID != "bob" || p.Kind != coderun.TokenJWT || p.Handle != "" || !slices.Equal(p.Scopes, tc.want) {
			t.Fatalf("%s: principal = %+v, want bob with %v", tc.name, *p, tc.want)
		}
	}

	var first string
	jtis := make([]string, 2)
	for i := range jtis {
		token, err := auth.SignHS256(testSecret, testIssuer, testAudience, "bob", nil, time.Hour, testNow)
		if err != nil {
			t.Fatal(err)
		}
		p, err := a.Authenticate(ctx, "Bearer "+token)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = token
		}
		jtis[i] = p.TokenID
	}
	if jtis[0] == "" || jtis[0] == jtis[1] {
		t.Fatalf("jti %q and %q: want two different random ids", jtis[0], jtis[1])
	}

	clk.Advance(time.Hour)
	_, err := a.Authenticate(ctx, "Bearer "+first)
	assertUnauthenticated(t, err, "token expired", first)

	if _, err := auth.SignHS256([]byte("short"), testIssuer, testAudience, "bob", nil, time.Hour, testNow); err == nil {
		t.Error("signed with a 5-byte secret")
	}
	if _, err := auth.SignHS256(testSecret, testIssuer, testAudience, "", nil, time.Hour, testNow); err == nil {
		t.Error("signed a token without a subject")
	}
}

func TestLoadPublicKeys(t *testing.T) {
	k := testKeys()
	keys, err := auth.LoadPublicKeys(writeFile(t, k.pemFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("loaded %d keys, want 3", len(keys))
	}
	if !k.rsaPKIX.PublicKey.Equal(keys[0]) || !k.rsaPKCS1.PublicKey.Equal(keys[1]) || !k.ed.Public().(ed25519.PublicKey).Equal(keys[2]) {
		t.Fatalf("loaded keys %T, %T, %T differ from the ones written", keys[0], keys[1], keys[2])
	}

	private, err := x509.MarshalPKCS8PrivateKey(k.ed)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small := mustRSA(1024)
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"empty file":      {nil, "no PEM public keys"},
		"not PEM":         {[]byte("ssh-ed25519 AAAAC3Nza alice@example"), "no PEM public keys"},
		"a private key":   {append(slices.Clone(k.pemFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: private})...), `PEM block 4: unexpected PEM block "PRIVATE KEY"`},
		"an ECDSA key":    {pemPKIX(&ecKey.PublicKey), "unsupported key type"},
		"a weak RSA key":  {pemPKIX(&small.PublicKey), "RSA key of 1024 bits"},
		"corrupt DER":     {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}), "PEM block 1"},
		"PKCS #1 as PKIX": {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsaPKCS1.PublicKey)}), "PEM block 1"},
	} {
		_, err := auth.LoadPublicKeys(writeFile(t, tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: LoadPublicKeys() = %v, want an error containing %q", name, err, tc.want)
		}
	}
	if _, err := auth.LoadPublicKeys(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("loaded keys from a missing file")
	}
}
