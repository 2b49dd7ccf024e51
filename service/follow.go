package service

import (
	"context"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// Stream is a live sequence of values. C is closed when the stream ends; Err
// then says why: nil when it is complete, else the reason (the subscriber
// fell behind, the run became invisible, …).
type Stream[T any] struct {
	C   <-chan T
	err func() error
}

// Err reports why C was closed; call it after C is closed.
func (s *Stream[T]) Err() error {
	if s.err == nil {
		return nil
	}
	return s.err()
}

// FollowRunStatus streams a run's status: the current one first, then every
// transition, and ends after a terminal one. Access is checked as for reading
// the run.
func (s *Service) FollowRunStatus(ctx context.Context, handle, runID string) (*Stream[coderun.RunStatusEvent], error) {
	if err := s.authorizeFollow(ctx, handle, runID); err != nil {
		return nil, err
	}
	sub, err := s.opts.Events.FollowStatus(ctx, runID)
	if err != nil {
		return nil, err
	}
	return &Stream[coderun.RunStatusEvent]{C: sub.C, err: sub.Err}, nil
}

// FollowRunOutput streams a run's output chunks with seq > afterSeq: stored
// ones first, then live ones, in seq order with no gaps and no duplicates, and
// ends when the run is finished and every chunk delivered.
func (s *Service) FollowRunOutput(ctx context.Context, handle, runID string, afterSeq int64) (*Stream[coderun.OutputChunk], error) {
	if afterSeq < 0 {
		var errs coderun.ValidationErrors
		errs.Add("afterSeq", "out_of_range", "afterSeq must be 0 or more")
		return nil, errs.Err()
	}
	if err := s.authorizeFollow(ctx, handle, runID); err != nil {
		return nil, err
	}
	sub, err := s.opts.Events.FollowOutput(ctx, runID, afterSeq)
	if err != nil {
		return nil, err
	}
	return &Stream[coderun.OutputChunk]{C: sub.C, err: sub.Err}, nil
}

// authorizeFollow checks that the caller may read run runID of handle, as
// reading the run itself does.
func (s *Service) authorizeFollow(ctx context.Context, handle, runID string) error {
	if s.opts.Events == nil {
		return coderun.Errorf(coderun.EUnavailable, "this server does not stream runs")
	}
	return s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, coderun.ScopeRunsRead, coderun.RoleViewer); err != nil {
			return err
		}
		_, err := tx.GetRun(ctx, handle, runID)
		return err
	})
}
