// Package events is run-event fan-out: it streams a run's status transitions
// and output chunks to the subscribers following it. Notifications carry run
// ids only ("run X changed"); whoever follows the run reads the new rows from
// the store, so a change made in this process and one made in another
// (through PostgreSQL LISTEN/NOTIFY, postgres.go) travel the same path.
//
// Per run watched in this process there is one feed: on each notification,
// and on a polling tick that catches lost ones, it reads what is new once and
// hands it to every subscriber of the run. Each subscriber replays what was
// stored before it came from the store itself, then follows the feed,
// dropping what it already has by seq; one that cannot keep up is closed
// rather than allowed to hold anything back.
package events

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// Store is where feeds and replays read runs.
type Store interface {
	RunChanges(ctx context.Context, runID string, afterTransition, afterSeq int64, maxChunks int) (store.RunChanges, error)
}

// Options configure a Hub.
type Options struct {
	// Poll is how often a feed reads its run without being told of a change,
	// for notifications that were lost (default 1 s).
	Poll time.Duration
	// Buffer is how many events a subscriber may have waiting; one that falls
	// further behind is closed with coderun.ESubscriberTooSlow (default 256).
	Buffer int
	Logger *slog.Logger
}

// pageSize is how many chunks one store read takes at most, so that a feed or
// a replay catching up on a long run reads it in bounded pieces. A feed's
// pages are no larger than a subscriber's buffer either, so that one page
// never overflows a subscriber that keeps up.
const pageSize = 128

// Hub streams runs to subscribers; a process has one.
type Hub struct {
	store Store
	opts  Options
	page  int // chunks per feed read

	mu    sync.Mutex
	feeds map[string]*feed
}

// NewHub returns a hub that reads runs from s.
func NewHub(s Store, opts Options) *Hub {
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Hub{store: s, opts: opts, page: min(pageSize, opts.Buffer), feeds: map[string]*feed{}}
}

// RunChanged tells the hub that runID has committed a change. It never
// blocks: the run's feed, if the run is watched here, reads soon after.
func (h *Hub) RunChanged(runID string) {
	h.mu.Lock()
	f := h.feeds[runID]
	h.mu.Unlock()
	if f != nil {
		f.poke()
	}
}

// Resync makes every watched run's feed read again, for changes whose
// notifications may have been missed (a listener that reconnected).
func (h *Hub) Resync() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.feeds {
		f.poke()
	}
}

// Subscription is a subscriber's stream. C is closed when it ends; Err then
// says why: nil when complete, an ESubscriberTooSlow *coderun.Error when the
// reader fell behind, ctx's error when the subscriber left.
type Subscription[T any] struct {
	C   <-chan T
	sub *subscriber[T]
}

// Err reports why C was closed; call it after C is closed.
func (s *Subscription[T]) Err() error { return s.sub.failure() }

// FollowStatus streams runID's status: the current one first, then every
// transition, ending after a terminal one. It lasts at most as long as ctx.
// The caller has checked that the subscriber may read the run.
func (h *Hub) FollowStatus(ctx context.Context, runID string) (*Subscription[coderun.RunStatusEvent], error) {
	f, err := h.acquire(ctx, runID)
	if err != nil {
		return nil, err
	}
	sub := newSubscriber[coderun.RunStatusEvent](h.opts.Buffer, 0, func(int64) error {
		return coderun.Errorf(coderun.ESubscriberTooSlow, "the subscriber fell more than %d events behind; subscribe again for the current status", h.opts.Buffer)
	})
	replay := func(ctx context.Context, _ int64) ([]item[coderun.RunStatusEvent], int64, bool, error) {
		c, err := h.store.RunChanges(ctx, runID, 0, 0, -1)
		if err != nil || len(c.Transitions) == 0 {
			return nil, -1, false, err
		}
		events, end := statusEvents(runID, c)
		return events[len(events)-1:], end, false, nil
	}
	return follow(ctx, h, f, sub, &f.status, replay), nil
}

// FollowOutput streams runID's output chunks with seq > afterSeq: those
// stored first, then those to come, in seq order without gaps or duplicates,
// ending once the run is finished and its last chunk delivered. It lasts at
// most as long as ctx. The caller has checked that the subscriber may read
// the run.
func (h *Hub) FollowOutput(ctx context.Context, runID string, afterSeq int64) (*Subscription[coderun.OutputChunk], error) {
	f, err := h.acquire(ctx, runID)
	if err != nil {
		return nil, err
	}
	sub := newSubscriber[coderun.OutputChunk](h.opts.Buffer, afterSeq, func(delivered int64) error {
		return coderun.Errorf(coderun.ESubscriberTooSlow, "the subscriber fell more than %d chunks behind; resume with afterSeq=%d", h.opts.Buffer, delivered)
	})
	replay := func(ctx context.Context, after int64) ([]item[coderun.OutputChunk], int64, bool, error) {
		c, err := h.store.RunChanges(ctx, runID, -1, after, pageSize)
		if err != nil {
			return nil, -1, false, err
		}
		return chunkItems(c.Chunks), outputEnd(c), len(c.Chunks) == pageSize, nil
	}
	return follow(ctx, h, f, sub, &f.output, replay), nil
}

// follow registers sub on f, so that it misses nothing from now on, and then
// runs it: replay, then live events, until it ends.
func follow[T any](ctx context.Context, h *Hub, f *feed, sub *subscriber[T], set *map[*subscriber[T]]struct{}, replay replayFunc[T]) *Subscription[T] {
	f.mu.Lock()
	(*set)[sub] = struct{}{}
	f.mu.Unlock()
	go func() {
		defer h.release(f)
		defer func() {
			f.mu.Lock()
			delete(*set, sub)
			f.mu.Unlock()
		}()
		sub.run(ctx, replay)
	}()
	return &Subscription[T]{C: sub.c, sub: sub}
}

// acquire returns runID's feed, started and positioned, holding a reference
// to it that release gives back.
func (h *Hub) acquire(ctx context.Context, runID string) (*feed, error) {
	h.mu.Lock()
	f := h.feeds[runID]
	if f == nil {
		f = newFeed(h, runID)
		h.feeds[runID] = f
		go f.run()
	}
	f.refs++
	h.mu.Unlock()
	select {
	case <-f.ready:
	case <-ctx.Done():
		h.release(f)
		return nil, ctx.Err()
	}
	if f.err != nil {
		h.release(f)
		return nil, f.err
	}
	return f, nil
}

// release gives back a reference to f; the last one stops it.
func (h *Hub) release(f *feed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f.refs--
	if f.refs == 0 {
		delete(h.feeds, f.runID)
		f.stop()
	}
}

// statusEvents are c's transitions as subscribers see them, a terminal one
// carrying how the run ended, and the seq that completes a status stream:
// the terminal transition's, or -1 when there is none among them.
func statusEvents(runID string, c store.RunChanges) (events []item[coderun.RunStatusEvent], end int64) {
	end = -1
	for _, t := range c.Transitions {
		e := coderun.RunStatusEvent{RunID: runID, Status: t.Status, At: t.At, Reason: t.Reason}
		if t.Status.Terminal() {
			end = t.Seq
			if t.Status == c.Status {
				e.ExitCode, e.Error = c.ExitCode, c.Error
			}
		}
		events = append(events, item[coderun.RunStatusEvent]{seq: t.Seq, v: e})
	}
	return events, end
}

func chunkItems(chunks []coderun.OutputChunk) []item[coderun.OutputChunk] {
	items := make([]item[coderun.OutputChunk], len(chunks))
	for i, c := range chunks {
		items[i] = item[coderun.OutputChunk]{seq: c.Seq, v: c}
	}
	return items
}

// outputEnd is the seq of the run's last chunk once it is finished, else
// unknown (-1).
func outputEnd(c store.RunChanges) int64 {
	if c.Status.Terminal() {
		return c.LastSeq
	}
	return -1
}
