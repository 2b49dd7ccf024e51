package events

import (
	"context"
	"sync"
)

// item is an event with its place in the run's sequence (a chunk's seq, a
// transition's), by which a subscriber drops what it already delivered.
type item[T any] struct {
	seq int64
	v   T
}

// replayFunc reads what was stored after seq after: the items, the seq that
// completes the stream (-1 while unknown), and whether more may follow at once.
type replayFunc[T any] func(ctx context.Context, after int64) (items []item[T], end int64, more bool, err error)

// subscriber is one follower of a run. Its feed pushes events into a bounded
// queue without ever waiting; its own goroutine (run) replays from the store,
// then moves the queue to c at the reader's pace.
type subscriber[T any] struct {
	c       chan T
	limit   int
	tooSlow func(delivered int64) error
	wake    chan struct{}
	// failed is closed when err is set, so that a send waiting for a reader
	// who fell behind gives up at once.
	failed chan struct{}

	mu        sync.Mutex
	queue     []item[T]
	delivered int64 // the last seq sent on c
	end       int64 // the seq that completes the stream, or -1
	err       error // why the stream ended early
}

func newSubscriber[T any](limit int, after int64, tooSlow func(delivered int64) error) *subscriber[T] {
	return &subscriber[T]{c: make(chan T), limit: limit, tooSlow: tooSlow, wake: make(chan struct{}, 1), failed: make(chan struct{}), delivered: after, end: -1}
}

// push queues live events; end >= 0 says which seq completes the stream. A
// subscriber whose queue would overflow is failed, never waited for.
func (s *subscriber[T]) push(items []item[T], end int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if end >= 0 {
		s.end = end
	}
	if len(s.queue)+len(items) > s.limit {
		s.failLocked(s.tooSlow(s.delivered))
		s.queue = nil
	} else {
		s.queue = append(s.queue, items...)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber[T]) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *subscriber[T]) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err)
}

func (s *subscriber[T]) failLocked(err error) {
	if s.err == nil {
		s.err = err
		close(s.failed)
	}
}

// run delivers the stream on c and closes c when it ends: complete, failed,
// or ctx done.
func (s *subscriber[T]) run(ctx context.Context, replay replayFunc[T]) {
	defer close(s.c)
	for more := true; more; {
		items, end, m, err := replay(ctx, s.last())
		if err != nil {
			s.fail(err)
			return
		}
		more = m
		s.mu.Lock()
		if end >= 0 {
			s.end = end
		}
		s.mu.Unlock()
		for _, it := range items {
			if !s.send(ctx, it) {
				return
			}
		}
	}
	for {
		it, ok, done := s.next()
		switch {
		case done:
			return
		case ok:
			if !s.send(ctx, it) {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			s.fail(ctx.Err())
			return
		case <-s.wake:
		}
	}
}

func (s *subscriber[T]) last() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delivered
}

// next takes the next undelivered item off the queue (ok), or says the
// stream is over (done), or neither: wait for a push.
func (s *subscriber[T]) next() (it item[T], ok, done bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.err == nil && len(s.queue) > 0 {
		it, s.queue = s.queue[0], s.queue[1:]
		if it.seq > s.delivered {
			return it, true, false
		}
	}
	return it, false, s.err != nil || s.complete()
}

func (s *subscriber[T]) complete() bool { return s.end >= 0 && s.delivered >= s.end }

// send delivers it unless it is a duplicate; false when the stream is over
// (ctx done, the subscriber failed, or it was the last item).
func (s *subscriber[T]) send(ctx context.Context, it item[T]) bool {
	if it.seq <= s.last() {
		return true
	}
	select {
	case s.c <- it.v:
	case <-s.failed:
		return false
	case <-ctx.Done():
		s.fail(ctx.Err())
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delivered = it.seq
	return s.err == nil && !s.complete()
}
