package service

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// The request log: every request a signed-in caller makes is kept with its
// caller, route and status, so that a support report can cite a request id
// the reporter made (and no other) and support can follow it. Requests are
// handed over as they are answered and written in batches, not one database
// write per request.
const (
	// requestFlushDelay is how long a recorded request waits for others to
	// share its write; another process serving a report sees it after that.
	requestFlushDelay = 250 * time.Millisecond
	// requestBatch is the batch size that is written at once.
	requestBatch = 512
	// maxPendingRequests bounds the memory requests wait in while the
	// database is slow; past it, requests go unrecorded (the access log
	// still has them) until a write catches up.
	maxPendingRequests = 64 << 10
	// requestRetention is how long a request can be cited.
	requestRetention = 30 * 24 * time.Hour
)

// requestLog batches request records on their way to the database.
type requestLog struct {
	db  *store.DB
	svc *Service

	mu        sync.Mutex
	pending   []coderun.RequestRecord
	scheduled bool // a flush is due
	dropped   int  // records lost since the last warning

	writing    sync.Mutex // one batch write at a time
	lastForget time.Time
}

// RecordRequest keeps r in the request log. It does not block on the
// database: r is written with others within requestFlushDelay.
func (s *Service) RecordRequest(r coderun.RequestRecord) {
	l := &s.requests
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) >= maxPendingRequests {
		l.dropped++
		return
	}
	l.pending = append(l.pending, r)
	switch {
	case len(l.pending) >= requestBatch:
		go l.flush(context.Background())
	case !l.scheduled:
		l.scheduled = true
		time.AfterFunc(requestFlushDelay, func() { l.flush(context.Background()) })
	}
}

// FlushRequests writes the requests recorded so far; a server calls it as it
// shuts down, after its last request.
func (s *Service) FlushRequests(ctx context.Context) { s.requests.flush(ctx) }

// flushFor makes sure that id, if this process recorded it, is in the
// database: a request answered a moment ago may still be pending, or in a
// batch being written.
func (l *requestLog) flushFor(ctx context.Context, id string) {
	l.mu.Lock()
	found := false
	for _, r := range l.pending {
		if r.ID == id {
			found = true
			break
		}
	}
	l.mu.Unlock()
	if found {
		l.flush(ctx)
		return
	}
	// A batch is taken from pending only while writing is held.
	l.writing.Lock()
	defer l.writing.Unlock()
}

// recentRequest reports whether id was handed out so recently that another
// process may not have written it yet. A request id is a ULID: it carries
// the time it was made.
func recentRequest(id string, now time.Time) bool {
	u, err := ulid.ParseStrict(strings.TrimPrefix(id, "req_"))
	if err != nil {
		return false
	}
	age := now.Sub(ulid.Time(u.Time()))
	return age > -time.Second && age < 2*requestFlushDelay
}

// flush writes every pending request, and at most once an hour forgets the
// ones past requestRetention.
func (l *requestLog) flush(ctx context.Context) {
	l.writing.Lock()
	defer l.writing.Unlock()
	l.mu.Lock()
	batch, dropped := l.pending, l.dropped
	l.pending, l.dropped, l.scheduled = nil, 0, false
	l.mu.Unlock()
	log := l.svc.log
	if dropped > 0 {
		log.WarnContext(ctx, "request log full: requests went unrecorded", "dropped", dropped)
	}
	if len(batch) == 0 {
		return
	}
	now := l.svc.now()
	forget := now.Sub(l.lastForget) > time.Hour
	err := l.db.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.RecordRequests(ctx, batch); err != nil {
			return err
		}
		if forget {
			_, err := tx.ForgetRequests(ctx, now.Add(-requestRetention))
			return err
		}
		return nil
	})
	if err != nil {
		log.WarnContext(ctx, "request log: write failed; these requests cannot be cited", "requests", len(batch), "err", err)
		return
	}
	if forget {
		l.lastForget = now
	}
}
