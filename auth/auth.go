// Package auth verifies who is calling: it turns the bearer token of a request
// (a JWT or a personal access token) into a *coderun.Principal. It mints and
// checks personal access tokens and signs development JWTs. Deciding what a
// principal may do (scopes against roles) is left to the use cases.
//
// No secret is ever logged or put into an error: failures say what was wrong
// with a token, never what it was.
package auth

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/gharart/coderun"
)

// TokenStore is the storage of personal access tokens the Authenticator needs.
type TokenStore interface {
	// AccessTokenByHash returns the token whose secret hashes to hash, or a
	// *coderun.Error with code coderun.ETokenNotFound.
	AccessTokenByHash(ctx context.Context, hash []byte) (coderun.AccessToken, error)
	// TouchAccessToken records that the token was used at at.
	TouchAccessToken(ctx context.Context, id string, at time.Time) error
}

// touchInterval is how stale a token's last-used time may get before a use
// refreshes it: the time is for people reviewing their tokens, and writing it
// on every request would make each read a write.
const touchInterval = time.Minute

// maxTokenLen bounds what is parsed: real tokens are far shorter, and a token
// can arrive outside HTTP's header limits (a websocket connection_init).
const maxTokenLen = 8 << 10

// Authenticator verifies bearer tokens. It is safe for concurrent use.
type Authenticator struct {
	jwt    *jwtVerifier
	tokens TokenStore
	now    func() time.Time
}

// NewAuthenticator returns an Authenticator that accepts JWTs as cfg says
// (none if cfg fails Validate) and personal access tokens found in tokens.
// now is the clock; nil means time.Now.
func NewAuthenticator(cfg JWTConfig, tokens TokenStore, now func() time.Time) *Authenticator {
	if now == nil {
		now = time.Now
	}
	return &Authenticator{jwt: newJWTVerifier(cfg, now), tokens: tokens, now: now}
}

// Authenticate verifies the value of an Authorization header and returns the
// caller. A missing, malformed, unknown, expired or revoked token is a
// *coderun.Error with code coderun.EUnauthenticated; any other error means
// the token could not be checked (the store failed) and is not the caller's fault.
func (a *Authenticator) Authenticate(ctx context.Context, authorization string) (*coderun.Principal, error) {
	if strings.TrimSpace(authorization) == "" {
		return nil, unauthenticated("missing bearer token")
	}
	token, ok := BearerToken(authorization)
	if !ok {
		return nil, unauthenticated("malformed Authorization header: want \"Bearer <token>\"")
	}
	if LooksLikePAT(token) {
		return a.authenticatePAT(ctx, token)
	}
	return a.jwt.verify(token)
}

func (a *Authenticator) authenticatePAT(ctx context.Context, secret string) (*coderun.Principal, error) {
	// The checksum turns away typos and guesses before they cost a query.
	if err := ParsePAT(secret); err != nil {
		return nil, err
	}
	tok, err := a.tokens.AccessTokenByHash(ctx, HashPAT(secret))
	if coderun.ErrorCode(err) == coderun.ETokenNotFound {
		return nil, unauthenticated("unknown access token")
	}
	if err != nil {
		return nil, fmt.Errorf("look up access token: %w", err)
	}
	now := a.now()
	if tok.RevokedAt != nil {
		return nil, unauthenticated("token revoked")
	}
	if !now.Before(tok.ExpiresAt) {
		return nil, unauthenticated("token expired")
	}
	if tok.LastUsedAt == nil || now.Sub(*tok.LastUsedAt) >= touchInterval {
		// Bookkeeping only: a failed write must not turn a valid caller away.
		if err := a.tokens.TouchAccessToken(ctx, tok.ID, now); err != nil {
			slog.WarnContext(ctx, "record access token use", "token_id", tok.ID, "err", err)
		}
	}
	return &coderun.Principal{
		UserID:  tok.UserID,
		Kind:    coderun.TokenPAT,
		TokenID: tok.ID,
		Scopes:  slices.Clone(tok.Scopes),
		Handle:  tok.Handle,
	}, nil
}

// BearerToken extracts the token from an Authorization header value of the
// form "Bearer <token>" (the scheme is case-insensitive, RFC 9110 §11.1). The
// token must be an RFC 6750 b64token, which every JWT and PAT is.
func BearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.Trim(header, " \t"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || len(token) > maxTokenLen || !isB64Token(token) {
		return "", false
	}
	return token, true
}

// isB64Token reports whether s is 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
// "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}

func unauthenticated(msg string) error {
	return &coderun.Error{Code: coderun.EUnauthenticated, Message: msg}
}
