package service

import (
	"context"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// Handle returns a handle the caller is a member of.
func (s *Service) Handle(ctx context.Context, handle string) (coderun.Handle, error) {
	var h coderun.Handle
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, "", coderun.RoleViewer); err != nil {
			return err
		}
		var err error
		h, err = tx.GetHandle(ctx, handle)
		return err
	})
	return h, err
}

// HandleUsage returns what a handle is using of its limits now.
func (s *Service) HandleUsage(ctx context.Context, handle string) (coderun.HandleUsage, error) {
	now := s.now()
	u := coderun.HandleUsage{DailyWritesResetAt: nextUTCMidnight(now)}
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, "", coderun.RoleViewer); err != nil {
			return err
		}
		var err error
		if u.ActiveRuns, err = tx.CountActiveRuns(ctx, handle); err != nil {
			return err
		}
		u.DailyWritesUsed, err = tx.DailyWrites(ctx, handle, now)
		return err
	})
	return u, err
}

func nextUTCMidnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}
