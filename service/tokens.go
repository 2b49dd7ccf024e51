package service

import (
	"context"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// AccessTokenByHash finds a personal access token by the digest of its secret;
// with TouchAccessToken it lets the authenticator look tokens up.
func (s *Service) AccessTokenByHash(ctx context.Context, hash []byte) (coderun.AccessToken, error) {
	var tok coderun.AccessToken
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		tok, err = tx.AccessTokenByHash(ctx, hash)
		return err
	})
	return tok, err
}

// TouchAccessToken records that a token was just used.
func (s *Service) TouchAccessToken(ctx context.Context, id string, at time.Time) error {
	return s.db.InTx(ctx, func(tx *store.Tx) error { return tx.TouchAccessToken(ctx, id, at) })
}
