package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gharart/coderun"
)

// accessTokenRow is an access_tokens row.
type accessTokenRow struct {
	ID         string `db:"id"`
	UserID     string `db:"user_id"`
	Handle     string `db:"handle"`
	Scopes     string `db:"scopes"`
	Prefix     string `db:"prefix"`
	Hash       []byte `db:"hash"`
	ExpiresAt  dbTime `db:"expires_at"`
	RevokedAt  dbTime `db:"revoked_at"`
	LastUsedAt dbTime `db:"last_used_at"`
	CreatedAt  dbTime `db:"created_at"`
}

const accessTokenColumns = `id, user_id, handle, scopes, prefix, hash, expires_at, revoked_at, last_used_at, created_at`

func (r accessTokenRow) accessToken() coderun.AccessToken {
	var scopes []coderun.Scope
	for _, s := range strings.Fields(r.Scopes) {
		scopes = append(scopes, coderun.Scope(s))
	}
	return coderun.AccessToken{
		ID:         r.ID,
		UserID:     r.UserID,
		Handle:     r.Handle,
		Scopes:     scopes,
		Prefix:     r.Prefix,
		Hash:       r.Hash,
		ExpiresAt:  r.ExpiresAt.Time,
		RevokedAt:  r.RevokedAt.ptr(),
		LastUsedAt: r.LastUsedAt.ptr(),
		CreatedAt:  r.CreatedAt.Time,
	}
}

// CreateAccessToken stores t; its CreatedAt defaults to now. An id or hash
// already stored is an EConflict; an unknown handle an EHandleNotFound.
func (tx *Tx) CreateAccessToken(ctx context.Context, t coderun.AccessToken) error {
	const q = `INSERT INTO access_tokens (` + accessTokenColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	_, err := tx.exec(ctx, q, t.ID, t.UserID, t.Handle, coderun.JoinScopes(t.Scopes, " "), t.Prefix, t.Hash,
		someTime(t.ExpiresAt), optionalTime(t.RevokedAt), optionalTime(t.LastUsedAt), someTime(tx.orNow(t.CreatedAt)))
	switch violation(err) {
	case uniqueViolation:
		return coderun.Errorf(coderun.EConflict, "access token %q already exists", t.ID)
	case foreignKeyViolation:
		return coderun.Errorf(coderun.EHandleNotFound, "handle %q not found", t.Handle)
	}
	if err != nil {
		return fmt.Errorf("create access token %q: %w", t.ID, err)
	}
	return nil
}

// AccessTokenByHash returns the token whose secret hashes to hash, revoked or
// expired ones included, or an ETokenNotFound.
func (tx *Tx) AccessTokenByHash(ctx context.Context, hash []byte) (coderun.AccessToken, error) {
	const q = `SELECT ` + accessTokenColumns + ` FROM access_tokens WHERE hash = ?`
	var row accessTokenRow
	err := tx.get(ctx, &row, q, hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return coderun.AccessToken{}, coderun.Errorf(coderun.ETokenNotFound, "access token not found")
	case err != nil:
		return coderun.AccessToken{}, fmt.Errorf("find access token by hash: %w", err)
	}
	return row.accessToken(), nil
}

// RevokeAccessToken revokes, as of at (now when zero), the token whose id or
// prefix is idOrPrefix, and returns it. An id match wins over prefix matches;
// no match is an ETokenNotFound and a prefix shared by several tokens an
// EConflict. Revoking a revoked token changes nothing.
func (tx *Tx) RevokeAccessToken(ctx context.Context, idOrPrefix string, at time.Time) (coderun.AccessToken, error) {
	const find = `SELECT ` + accessTokenColumns + ` FROM access_tokens WHERE id = ? OR prefix = ? ORDER BY id`
	var rows []accessTokenRow
	if err := tx.selectAll(ctx, &rows, find+tx.db.d.forUpdate, idOrPrefix, idOrPrefix); err != nil {
		return coderun.AccessToken{}, fmt.Errorf("find access token %q: %w", idOrPrefix, err)
	}
	var row *accessTokenRow
	for i := range rows {
		if rows[i].ID == idOrPrefix {
			row = &rows[i]
		}
	}
	if row == nil {
		switch len(rows) {
		case 0:
			return coderun.AccessToken{}, coderun.Errorf(coderun.ETokenNotFound, "no access token has the id or prefix %q", idOrPrefix)
		case 1:
			row = &rows[0]
		default:
			return coderun.AccessToken{}, coderun.Errorf(coderun.EConflict,
				"the prefix %q is ambiguous: %d access tokens have it; revoke by id", idOrPrefix, len(rows))
		}
	}
	if row.RevokedAt.Valid {
		return row.accessToken(), nil
	}

	const revoke = `UPDATE access_tokens SET revoked_at = ? WHERE id = ?`
	row.RevokedAt = someTime(stored(tx.orNow(at)))
	if _, err := tx.exec(ctx, revoke, row.RevokedAt, row.ID); err != nil {
		return coderun.AccessToken{}, fmt.Errorf("revoke access token %q: %w", row.ID, err)
	}
	return row.accessToken(), nil
}

// TouchAccessToken records that the token id was used at at (now when zero).
// An unknown id is an ETokenNotFound.
func (tx *Tx) TouchAccessToken(ctx context.Context, id string, at time.Time) error {
	const q = `UPDATE access_tokens SET last_used_at = ? WHERE id = ?`
	n, err := affected(tx.exec(ctx, q, someTime(tx.orNow(at)), id))
	if err != nil {
		return fmt.Errorf("touch access token %q: %w", id, err)
	}
	if n == 0 {
		return coderun.Errorf(coderun.ETokenNotFound, "access token %q not found", id)
	}
	return nil
}
