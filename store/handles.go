package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/gharart/coderun"
)

// CreateHandle adds the handle h; its CreatedAt defaults to now. A handle of
// that name already existing is an EConflict.
func (tx *Tx) CreateHandle(ctx context.Context, h coderun.Handle) error {
	const q = `INSERT INTO handles (name, max_active_runs, daily_write_limit, created_at) VALUES (?, ?, ?, ?)`
	_, err := tx.exec(ctx, q, h.Name, h.MaxActiveRuns, h.DailyWriteLimit, someTime(tx.orNow(h.CreatedAt)))
	switch {
	case violation(err) == uniqueViolation:
		return coderun.Errorf(coderun.EConflict, "handle %q already exists", h.Name)
	case err != nil:
		return fmt.Errorf("create handle %q: %w", h.Name, err)
	}
	return nil
}

// GetHandle returns the handle called name, or an EHandleNotFound.
func (tx *Tx) GetHandle(ctx context.Context, name string) (coderun.Handle, error) {
	return tx.getHandle(ctx, name, "")
}

// LockHandle is GetHandle that also holds the handle's row until the
// transaction ends, so that writes checked against the handle's limits (its
// active runs, its daily writes) take turns instead of overshooting them.
func (tx *Tx) LockHandle(ctx context.Context, name string) (coderun.Handle, error) {
	return tx.getHandle(ctx, name, tx.db.d.forUpdate)
}

func (tx *Tx) getHandle(ctx context.Context, name, lock string) (coderun.Handle, error) {
	q := `SELECT name, max_active_runs, daily_write_limit, created_at FROM handles WHERE name = ?` + lock
	var h coderun.Handle
	var created dbTime
	err := tx.queryRow(ctx, q, name).Scan(&h.Name, &h.MaxActiveRuns, &h.DailyWriteLimit, &created)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return coderun.Handle{}, coderun.Errorf(coderun.EHandleNotFound, "handle %q not found", name)
	case err != nil:
		return coderun.Handle{}, fmt.Errorf("get handle %q: %w", name, err)
	}
	h.CreatedAt = created.Time
	return h, nil
}

// PutMember gives m.UserID the role m.Role in m.Handle, adding the member or
// changing their role. An unknown handle is an EHandleNotFound.
func (tx *Tx) PutMember(ctx context.Context, m coderun.Member) error {
	if m.Role < coderun.RoleViewer || m.Role > coderun.RoleOwner {
		return coderun.Errorf(coderun.EInvalidRequest, "a member's role must be viewer, developer, admin or owner, not %s", m.Role)
	}
	const q = `INSERT INTO members (handle, user_id, role) VALUES (?, ?, ?)
		ON CONFLICT (handle, user_id) DO UPDATE SET role = excluded.role`
	_, err := tx.exec(ctx, q, m.Handle, m.UserID, m.Role.String())
	switch {
	case violation(err) == foreignKeyViolation:
		return coderun.Errorf(coderun.EHandleNotFound, "handle %q not found", m.Handle)
	case err != nil:
		return fmt.Errorf("put member %q of handle %q: %w", m.UserID, m.Handle, err)
	}
	return nil
}

// MemberRole returns userID's role in handle, or RoleNone when they are not a
// member (or there is no such handle).
func (tx *Tx) MemberRole(ctx context.Context, handle, userID string) (coderun.Role, error) {
	const q = `SELECT role FROM members WHERE handle = ? AND user_id = ?`
	var name string
	err := tx.get(ctx, &name, q, handle, userID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return coderun.RoleNone, nil
	case err != nil:
		return coderun.RoleNone, fmt.Errorf("role of %q in handle %q: %w", userID, handle, err)
	}
	role, err := coderun.ParseRole(name)
	if err != nil {
		return coderun.RoleNone, fmt.Errorf("role of %q in handle %q: stored role %q: %w", userID, handle, name, err)
	}
	return role, nil
}
