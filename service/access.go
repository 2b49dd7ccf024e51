package service

import (
	"context"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// authorize checks that the caller may act on handle: the caller is a member of
// it (and, for a token bound to one handle, it is that handle), the token carries
// scope (when one is named), and the caller's current role is at least min.
// A handle the caller cannot see is not found, never forbidden, so that callers
// cannot learn which handles exist.
func authorize(ctx context.Context, tx *store.Tx, handle string, scope coderun.Scope, min coderun.Role) (*coderun.Principal, error) {
	p := coderun.PrincipalFromContext(ctx)
	if p == nil {
		return nil, coderun.Errorf(coderun.EUnauthenticated, "authentication required")
	}
	notFound := coderun.Errorf(coderun.EHandleNotFound, "handle %q not found", handle)
	if p.Handle != "" && p.Handle != handle {
		return nil, notFound
	}
	role, err := tx.MemberRole(ctx, handle, p.UserID)
	if err != nil {
		return nil, err
	}
	if role == coderun.RoleNone {
		return nil, notFound
	}
	if scope != "" && !p.HasScope(scope) {
		return nil, coderun.Errorf(coderun.EInsufficientScope, "this token lacks the %s scope", scope)
	}
	if role < min {
		return nil, coderun.Errorf(coderun.EForbidden, "your role in %q is %s; this needs %s or higher", handle, role, min)
	}
	coderun.NoteHandle(ctx, handle)
	return p, nil
}

// signedIn checks that there is a caller and that their token carries scope:
// all an action outside any handle needs.
func signedIn(ctx context.Context, scope coderun.Scope) (*coderun.Principal, error) {
	p := coderun.PrincipalFromContext(ctx)
	switch {
	case p == nil:
		return nil, coderun.Errorf(coderun.EUnauthenticated, "authentication required")
	case !p.HasScope(scope):
		return nil, coderun.Errorf(coderun.EInsufficientScope, "this token lacks the %s scope", scope)
	}
	return p, nil
}
