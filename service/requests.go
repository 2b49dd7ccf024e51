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

	mu      sync.Mutex
	pending []coderun.RequestRecord
	due     bool // a flush is scheduled or about to run
	dropped int  // records lost since the last warning

	writing  sync.Mutex // one batch write at a time
	failures int        // batch writes failed in a row
}

// maxRequestWriteFailures is how many times in a row a batch is tried before
// it is given up (the access log still has its requests).
const maxRequestWriteFailures = 3

// requestWriteTimeout bounds one batch write.
const requestWriteTimeout = 10 * time.Second

// RecordRequest keeps r in the request log. It does not block on the
// database: r is written with others within requestFlushDelay, or at once
// when a whole batch is waiting.
func (s *Service) RecordRequest(r coderun.RequestRecord) {
	l := &s.requests
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) >= maxPendingRequests {
		l.dropped++
		return
	}
	l.pending = append(l.pending, r)
	if l.due {
		return
	}
	l.due = true
	delay := requestFlushDelay
	if len(l.pending) >= requestBatch {
		delay = 0
	}
	time.AfterFunc(delay, func() { l.flush(context.Background()) })
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

// flush writes every pending request. The write is the log's, not the
// caller's: it goes on when the caller's context ends (a reporter who hangs
// up), so that others' requests are not lost with it. A batch that cannot be
// written is tried again with the next, maxRequestWriteFailures times.
func (l *requestLog) flush(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestWriteTimeout)
	defer cancel()
	l.writing.Lock()
	defer l.writing.Unlock()
	l.mu.Lock()
	batch, dropped := l.pending, l.dropped
	l.pending, l.dropped, l.due = nil, 0, false
	l.mu.Unlock()
	log := l.svc.log
	if dropped > 0 {
		log.WarnContext(ctx, "request log full: requests went unrecorded", "dropped", dropped)
	}
	if len(batch) == 0 {
		return
	}
	err := l.db.InTx(ctx, func(tx *store.Tx) error { return tx.RecordRequests(ctx, batch) })
	if err != nil {
		if l.failures++; l.failures >= maxRequestWriteFailures {
			l.failures = 0
			log.WarnContext(ctx, "request log: write failed again; these requests cannot be cited", "requests", len(batch), "err", err)
			return
		}
		log.WarnContext(ctx, "request log: write failed; trying again", "requests", len(batch), "err", err)
		l.requeue(batch)
		return
	}
	l.failures = 0
}

// Housekeep forgets what has outlived its retention (see Forget) and
// releases images no longer used (see ReleaseImages), at once and then every
// hour, until ctx ends. A server runs it for as long as it serves.
func (s *Service) Housekeep(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		s.Forget(ctx)
		s.ReleaseImages(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Forget drops what has outlived its retention: requests too old to cite,
// and idempotency keys too old to replay, of every handle (a handle drops its
// own as it claims one, but one that stopped writing would keep them).
func (s *Service) Forget(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, requestWriteTimeout)
	defer cancel()
	now := s.now()
	var requests, keys int64
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if requests, err = tx.ForgetRequests(ctx, now.Add(-requestRetention)); err != nil {
			return err
		}
		keys, err = tx.ForgetIdempotentWrites(ctx, now.Add(-idempotencyRetention))
		return err
	})
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.WarnContext(ctx, "forgetting old requests and idempotency keys failed", "err", err)
	case requests > 0 || keys > 0:
		s.log.InfoContext(ctx, "forgot old requests and idempotency keys", "requests", requests, "idempotency_keys", keys)
	}
}

// requeue puts a batch that could not be written back in front of the
// requests recorded since, as far as maxPendingRequests allows, and has it
// tried again after requestFlushDelay.
func (l *requestLog) requeue(batch []coderun.RequestRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	keep := min(len(batch), maxPendingRequests-len(l.pending))
	l.dropped += len(batch) - keep
	l.pending = append(batch[:keep:keep], l.pending...)
	if !l.due {
		l.due = true
		time.AfterFunc(requestFlushDelay, func() { l.flush(context.Background()) })
	}
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
