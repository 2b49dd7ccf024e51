package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gharart/coderun"
	"github.com/golang-jwt/jwt/v5"
)

// JWTConfig says which JWTs the service accepts. Each algorithm is pinned to
// its kind of key: HS256 to the secret, RS256 to RSA keys, EdDSA to Ed25519
// keys, so a token cannot choose how it is checked.
type JWTConfig struct {
	// HS256Secret verifies HS256 tokens (at least 32 bytes); empty disables HS256.
	HS256Secret []byte
	// PublicKeys verify RS256 (*rsa.PublicKey) and EdDSA (ed25519.PublicKey) tokens.
	PublicKeys []crypto.PublicKey
	// Issuer and Audience must equal the token's iss and be among its aud.
	Issuer, Audience string
	// Leeway tolerates clock skew on exp, nbf and iat.
	Leeway time.Duration
}

// Lower bounds on key strength: RFC 7518 §3.2 asks for an HMAC key at least as
// long as the hash; RSA below 2048 bits is no longer considered safe.
const (
	minHS256SecretLen = 32
	minRSABits        = 2048
)

// Validate reports a configuration that could not verify JWTs safely. Call it
// at startup: an Authenticator built from an invalid config rejects every JWT
// rather than check less than it should.
func (c JWTConfig) Validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("JWT issuer is required"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("JWT audience is required"))
	}
	if n := len(c.HS256Secret); n > 0 && n < minHS256SecretLen {
		errs = append(errs, fmt.Errorf("JWT HS256 secret is %d bytes; at least %d are required", n, minHS256SecretLen))
	}
	for i, k := range c.PublicKeys {
		if err := checkPublicKey(k); err != nil {
			errs = append(errs, fmt.Errorf("JWT public key %d: %w", i+1, err))
		}
	}
	return errors.Join(errs...)
}

func checkPublicKey(k crypto.PublicKey) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return fmt.Errorf("RSA key of %d bits; at least %d are required", n, minRSABits)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("Ed25519 key of %d bytes", len(k))
		}
	default:
		return fmt.Errorf("unsupported key type %T (want RSA or Ed25519)", k)
	}
	return nil
}

// LoadPublicKeys reads RSA and Ed25519 public keys from a file of PEM blocks:
// "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY" (PKCS #1). Any other block, such as a
// private key put there by mistake, is an error.
func LoadPublicKeys(pemFile string) ([]crypto.PublicKey, error) {
	rest, err := os.ReadFile(pemFile)
	if err != nil {
		return nil, fmt.Errorf("read JWT public keys: %w", err)
	}
	var keys []crypto.PublicKey
	for n := 1; ; n++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		var key crypto.PublicKey
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		default:
			err = fmt.Errorf("unexpected PEM block %q (want PUBLIC KEY or RSA PUBLIC KEY)", block.Type)
		}
		if err == nil {
			err = checkPublicKey(key)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d: %w", pemFile, n, err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM public keys found", pemFile)
	}
	return keys, nil
}

// claims are the JWT claims coderun reads. Scope is a pointer because an absent
// claim (every scope) differs from an empty one (no scope).
type claims struct {
	jwt.RegisteredClaims
	Scope *string `json:"scope,omitempty"`
}

// jwtVerifier checks JWTs against a JWTConfig. A nil parser means no JWT is
// accepted (no keys, or a config that failed Validate).
type jwtVerifier struct {
	parser  *jwt.Parser
	secret  []byte
	rsaKeys []jwt.VerificationKey
	edKeys  []jwt.VerificationKey
}

func newJWTVerifier(cfg JWTConfig, now func() time.Time) *jwtVerifier {
	if cfg.Validate() != nil {
		return &jwtVerifier{}
	}
	v := &jwtVerifier{secret: slices.Clone(cfg.HS256Secret)}
	for _, k := range cfg.PublicKeys {
		switch k.(type) {
		case *rsa.PublicKey:
			v.rsaKeys = append(v.rsaKeys, k)
		case ed25519.PublicKey:
			v.edKeys = append(v.edKeys, k)
		}
	}
	var algs []string
	if len(v.secret) > 0 {
		algs = append(algs, jwt.SigningMethodHS256.Alg())
	}
	if len(v.rsaKeys) > 0 {
		algs = append(algs, jwt.SigningMethodRS256.Alg())
	}
	if len(v.edKeys) > 0 {
		algs = append(algs, jwt.SigningMethodEdDSA.Alg())
	}
	if len(algs) == 0 {
		return v
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(now),
	)
	return v
}

// key returns the keys that may verify a token of this algorithm. The parser
// has already refused algorithms outside the configured ones; this maps each
// remaining one to its own kind of key only, which is what defeats algorithm
// confusion (an HS256 token "signed" with a public key's bytes).
func (v *jwtVerifier) key(t *jwt.Token) (any, error) {
	switch t.Method {
	case jwt.SigningMethodHS256:
		return v.secret, nil
	case jwt.SigningMethodRS256:
		return jwt.VerificationKeySet{Keys: v.rsaKeys}, nil
	case jwt.SigningMethodEdDSA:
		return jwt.VerificationKeySet{Keys: v.edKeys}, nil
	}
	return nil, jwt.ErrTokenUnverifiable
}

// verify checks a JWT and returns the principal it names. Its errors are
// unauthenticated with a fixed message: never the token or parts of it.
func (v *jwtVerifier) verify(token string) (*coderun.Principal, error) {
	if v.parser == nil {
		return nil, unauthenticated("invalid token")
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.key); err != nil {
		return nil, unauthenticated(jwtFailure(err))
	}
	if c.Subject == "" {
		return nil, unauthenticated("token has no subject")
	}
	return &coderun.Principal{
		UserID:  c.Subject,
		Kind:    coderun.TokenJWT,
		TokenID: c.ID,
		Scopes:  scopesFromClaim(c.Scope),
	}, nil
}

// jwtFailure names why a JWT was refused. The library's own messages can quote
// pieces of the token, so they are never passed on.
func jwtFailure(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "invalid token signature"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token is missing a required claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "token has the wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token has the wrong audience"
	}
	return "invalid token"
}

// scopesFromClaim turns a space-separated scope claim into known scopes,
// dropping unknown ones (an identity provider may issue scopes for other
// services). No claim at all means every scope.
func scopesFromClaim(claim *string) []coderun.Scope {
	if claim == nil {
		return slices.Clone(coderun.AllScopes)
	}
	scopes := []coderun.Scope{}
	for _, f := range strings.Fields(*claim) {
		s := coderun.Scope(f)
		if slices.Contains(coderun.AllScopes, s) && !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	slices.Sort(scopes)
	return scopes
}

// SignHS256 issues a JWT for development and tests. scopes nil leaves out the
// scope claim (every scope); a non-nil empty slice grants none. The jti is
// random so each token can be told apart.
func SignHS256(secret []byte, issuer, audience, sub string, scopes []coderun.Scope, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) < minHS256SecretLen {
		return "", fmt.Errorf("sign JWT: HS256 secret is %d bytes; at least %d are required", len(secret), minHS256SecretLen)
	}
	if sub == "" {
		return "", errors.New("sign JWT: subject is required")
	}
	if ttl <= 0 {
		return "", errors.New("sign JWT: lifetime must be positive")
	}
	c := claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    issuer,
		Audience:  jwt.ClaimStrings{audience},
		Subject:   sub,
		ID:        rand.Text(),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if scopes != nil {
		s := coderun.JoinScopes(scopes, " ")
		c.Scope = &s
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign JWT: %w", err)
	}
	return token, nil
}
