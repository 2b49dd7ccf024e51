package events

import (
	"context"
	"sync"
	"time"

	"github.com/gharart/coderun"
)

// feed reads one run for all of its subscribers in this process: once per
// notification (or polling tick), whatever their number.
type feed struct {
	hub   *Hub
	runID string
	ctx   context.Context
	stop  context.CancelFunc
	wake  chan struct{}
	// ready is closed once the feed knows where the run stands; err is then
	// why it could not.
	ready chan struct{}
	err   error
	refs  int // guarded by hub.mu

	// Where the feed has read up to; only its goroutine touches them.
	lastTransition, lastSeq int64
	// finished: the run is terminal and every chunk read; nothing can change.
	finished bool

	mu     sync.Mutex
	status map[*subscriber[coderun.RunStatusEvent]]struct{}
	output map[*subscriber[coderun.OutputChunk]]struct{}
}

func newFeed(h *Hub, runID string) *feed {
	ctx, stop := context.WithCancel(context.Background())
	return &feed{
		hub: h, runID: runID, ctx: ctx, stop: stop,
		wake:   make(chan struct{}, 1),
		ready:  make(chan struct{}),
		status: map[*subscriber[coderun.RunStatusEvent]]struct{}{},
		output: map[*subscriber[coderun.OutputChunk]]struct{}{},
	}
}

// poke asks the feed to read; pokes while one is pending merge into it.
func (f *feed) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run positions the feed at the run's current state, then reads and fans out
// what is new until the feed is stopped. Subscribers register only after the
// position is taken, and replay after registering, so that what the feed
// skips they read themselves.
func (f *feed) run() {
	c, err := f.hub.store.RunChanges(f.ctx, f.runID, 0, 0, -1)
	if err == nil {
		if n := len(c.Transitions); n > 0 {
			f.lastTransition = c.Transitions[n-1].Seq
		}
		f.lastSeq = c.LastSeq
		f.finished = c.Status.Terminal()
	}
	f.err = err
	close(f.ready)
	if err != nil {
		return
	}
	tick := time.NewTicker(f.hub.opts.Poll)
	defer tick.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.wake:
		case <-tick.C:
		}
		if !f.finished {
			f.read()
		}
	}
}

// read fans out everything new, a page at a time.
func (f *feed) read() {
	for {
		c, err := f.hub.store.RunChanges(f.ctx, f.runID, f.lastTransition, f.lastSeq, f.hub.page)
		if err != nil {
			if f.ctx.Err() == nil {
				f.hub.opts.Logger.Warn("reading a followed run failed; retrying on the next tick", "run", f.runID, "err", err)
			}
			return
		}
		events, statusEnd := statusEvents(f.runID, c)
		chunks := chunkItems(c.Chunks)
		if n := len(c.Transitions); n > 0 {
			f.lastTransition = c.Transitions[n-1].Seq
		}
		if n := len(c.Chunks); n > 0 {
			f.lastSeq = c.Chunks[n-1].Seq
		}
		end := outputEnd(c)
		f.finished = end >= 0 && f.lastSeq >= end
		f.mu.Lock()
		if len(events) > 0 {
			for s := range f.status {
				s.push(events, statusEnd)
			}
		}
		if len(chunks) > 0 || end >= 0 {
			for s := range f.output {
				s.push(chunks, end)
			}
		}
		f.mu.Unlock()
		if len(c.Chunks) < f.hub.page {
			return
		}
	}
}
