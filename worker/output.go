package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor"
	"github.com/gharart/coderun/store"
)

// Chunks are coalesced before they are stored, so that a chatty program does
// not make a row per write: a stored chunk holds up to maxChunk bytes of one
// stream, and waits at most flushAfter for more.
const (
	maxChunk   = 64 << 10
	flushAfter = 50 * time.Millisecond
)

// output is the executor.Sink of one run: it records the start, and coalesces
// and stores the output, numbering chunks 1, 2, 3, … without gaps.
type output struct {
	w     *Worker
	runID string
	ctx   context.Context
	// stop ends the run when its output cannot be stored: a run whose output
	// would be lost must not go on.
	stop context.CancelCauseFunc

	mu     sync.Mutex
	buf    []byte
	stream coderun.Stream
	at     time.Time // when buf's first byte arrived
	seq    int64
	err    error // the first failure to store; the run is then stopped
	timer  *time.Timer
}

func newOutput(w *Worker, runID string, stop context.CancelCauseFunc) *output {
	o := &output{w: w, runID: runID, ctx: context.Background(), stop: stop}
	o.timer = time.AfterFunc(time.Hour, o.flushLate)
	o.timer.Stop()
	return o
}

// Started records that the run's program started.
func (o *output) Started(at time.Time) {
	err := o.w.db.InTx(o.ctx, func(tx *store.Tx) error {
		return tx.MarkRunning(o.ctx, o.runID, o.w.opts.ID, at.UTC().Truncate(time.Microsecond))
	})
	if err != nil {
		o.fail(err)
		return
	}
	o.w.opts.Events.RunChanged(o.runID)
}

// Output takes a piece of output; it is stored within flushAfter.
func (o *output) Output(c executor.Chunk) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.buf) > 0 && c.Stream != o.stream {
		o.flushLocked(true)
	}
	data := c.Data
	for len(data) > 0 {
		if len(o.buf) == 0 {
			o.stream, o.at = c.Stream, c.At
			o.timer.Reset(flushAfter)
		}
		n := min(len(data), maxChunk-len(o.buf))
		o.buf = append(o.buf, data[:n]...)
		data = data[n:]
		if len(o.buf) >= maxChunk {
			o.flushLocked(false)
		}
	}
}

func (o *output) flushLate() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushLocked(false)
}

// flushLocked stores what is buffered. Unless whole, it holds back an
// incomplete UTF-8 sequence at the end, so that a chunk of text never ends
// in the middle of a character.
func (o *output) flushLocked(whole bool) {
	if len(o.buf) == 0 || o.err != nil {
		return
	}
	cut := len(o.buf)
	if !whole {
		cut = completeUTF8(o.buf)
		if cut == 0 {
			cut = len(o.buf) // not text at all, or only a fragment: store it
		}
	}
	o.seq++
	chunk := coderun.OutputChunk{Seq: o.seq, Stream: o.stream, Data: append([]byte(nil), o.buf[:cut]...), At: o.at}
	err := o.w.db.InTx(o.ctx, func(tx *store.Tx) error {
		return tx.AppendOutput(o.ctx, o.runID, o.w.opts.ID, chunk)
	})
	if err != nil {
		o.failLocked(err)
		return
	}
	o.w.opts.Events.RunChanged(o.runID)
	rest := copy(o.buf, o.buf[cut:])
	o.buf = o.buf[:rest]
	if rest > 0 {
		o.timer.Reset(flushAfter)
	} else {
		o.timer.Stop()
	}
}

// completeUTF8 returns the length of b without an incomplete multi-byte
// sequence at its end.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

func (o *output) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failLocked(err)
}

func (o *output) failLocked(err error) {
	if o.err != nil {
		return
	}
	o.err = err
	if errors.Is(err, store.ErrLeaseLost) {
		o.stop(errLeaseLost)
		return
	}
	o.stop(fmt.Errorf("storing the run failed: %w", err))
}

// close stores what is left and reports the first failure to store.
func (o *output) close() error {
	o.timer.Stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushLocked(true)
	return o.err
}
