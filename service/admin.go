package service

import (
	"context"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/store"
)

// The operator's use cases, run from the command line on the service's own
// database: they have no principal, since whoever holds the database holds
// everything anyway.

// CreateHandle creates a handle owned by owner. Zero limits take the defaults.
func (s *Service) CreateHandle(ctx context.Context, name, owner string, maxActiveRuns, dailyWriteLimit int) (coderun.Handle, error) {
	var errs coderun.ValidationErrors
	if !coderun.HandlePattern.MatchString(name) {
		errs.Add("handle", "invalid", "handle must match %s", coderun.HandlePattern)
	}
	if !validUserID(owner) {
		errs.Add("owner", "invalid", "owner must be a user id of 1 to 255 printable characters")
	}
	if maxActiveRuns == 0 {
		maxActiveRuns = coderun.DefaultMaxActiveRuns
	}
	if dailyWriteLimit == 0 {
		dailyWriteLimit = coderun.DefaultDailyWriteLimit
	}
	if maxActiveRuns < 1 {
		errs.Add("maxActiveRuns", "out_of_range", "maxActiveRuns must be at least 1")
	}
	if dailyWriteLimit < 1 {
		errs.Add("dailyWriteLimit", "out_of_range", "dailyWriteLimit must be at least 1")
	}
	if err := errs.Err(); err != nil {
		return coderun.Handle{}, err
	}
	h := coderun.Handle{Name: name, MaxActiveRuns: maxActiveRuns, DailyWriteLimit: dailyWriteLimit, CreatedAt: s.now()}
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateHandle(ctx, h); err != nil {
			return err
		}
		return tx.PutMember(ctx, coderun.Member{Handle: name, UserID: owner, Role: coderun.RoleOwner})
	})
	return h, err
}

// AddMember gives user a role in handle, or changes the role it has.
func (s *Service) AddMember(ctx context.Context, handle, user string, role coderun.Role) error {
	if !validUserID(user) {
		return coderun.Errorf(coderun.EInvalidRequest, "user must be a user id of 1 to 255 printable characters")
	}
	return s.db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.GetHandle(ctx, handle); err != nil {
			return err
		}
		return tx.PutMember(ctx, coderun.Member{Handle: handle, UserID: user, Role: role})
	})
}

// CreateToken mints a personal access token for user in handle and returns its
// secret, which is shown once and stored only as a digest.
func (s *Service) CreateToken(ctx context.Context, user, handle string, scopes []coderun.Scope, ttl time.Duration) (string, coderun.AccessToken, error) {
	if len(scopes) == 0 {
		return "", coderun.AccessToken{}, coderun.Errorf(coderun.EInvalidRequest, "a token needs at least one scope")
	}
	if ttl <= 0 {
		return "", coderun.AccessToken{}, coderun.Errorf(coderun.EInvalidRequest, "a token's lifetime must be positive")
	}
	secret, err := auth.NewPAT()
	if err != nil {
		return "", coderun.AccessToken{}, err
	}
	now := s.now()
	tok := coderun.AccessToken{
		ID:        "tok_" + ulid.Make().String(),
		UserID:    user,
		Handle:    handle,
		Scopes:    scopes,
		Prefix:    auth.PATPrefix(secret),
		Hash:      auth.HashPAT(secret),
		ExpiresAt: now.Add(ttl),
		CreatedAt: now,
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		role, err := tx.MemberRole(ctx, handle, user)
		if err != nil {
			return err
		}
		if role == coderun.RoleNone {
			return coderun.Errorf(coderun.EHandleNotFound, "user %q is not a member of handle %q", user, handle)
		}
		return tx.CreateAccessToken(ctx, tok)
	})
	if err != nil {
		return "", coderun.AccessToken{}, err
	}
	return secret, tok, nil
}

// RevokeToken revokes the token with the given id or secret prefix.
func (s *Service) RevokeToken(ctx context.Context, idOrPrefix string) (coderun.AccessToken, error) {
	var tok coderun.AccessToken
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		var err error
		tok, err = tx.RevokeAccessToken(ctx, idOrPrefix, s.now())
		return err
	})
	return tok, err
}

func validUserID(u string) bool {
	return u != "" && len(u) <= 255 && strings.IndexFunc(u, notPrintable) < 0
}
