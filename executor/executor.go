// Package executor owns the engine-neutral interface through which workers run
// code: preparing a locked-down container for a run, feeding it the code,
// streaming its output and reporting how it ended. Implementations live in
// sub-packages named for the engine they drive (executor/docker).
package executor

import (
	"context"
	"errors"
	"io/fs"
	"time"

	"github.com/gharart/coderun"
)

// Executor runs programs in sandboxes. Preparing a run is separate from running
// it, so that a pool of prepared sandboxes can later stand behind the same
// interface.
type Executor interface {
	// Prepare creates the run's sandbox from spec and delivers its files;
	// nothing runs yet. An image the engine does not have is ErrImageUnavailable.
	Prepare(ctx context.Context, spec Spec) (Sandbox, error)
	// Cleanup removes everything run runID left on the engine. It is safe to
	// call again, and for a run that was never prepared; it must finish even
	// when ctx is cancelled, bounded by its own timeout.
	Cleanup(ctx context.Context, runID string) error
	// Sandboxes lists the run ids of every sandbox this service has on the
	// engine, so that those no live run owns can be cleaned up.
	Sandboxes(ctx context.Context) ([]string, error)
}

// Sandbox is a prepared run.
type Sandbox interface {
	// Run starts the program, feeds it stdin, streams its output to sink and
	// enforces the spec's limits while it streams (wall time, output bytes);
	// it returns how the program ended. Cancelling ctx kills the program and
	// ends it as Cancelled. Run does not remove the sandbox: Cleanup does.
	Run(ctx context.Context, sink Sink) (Outcome, error)
}

// Spec is everything needed to run one program.
type Spec struct {
	RunID string
	// Image is the reference to start from: name@digest as validated, or an
	// image id for a local-only image.
	Image string
	// Command is the argv; empty means the image's own entrypoint and command.
	Command []string
	// Args follow Command (or the image's entrypoint and command).
	Args []string
	// Files are written under WorkDir before the program starts.
	Files []File
	Stdin []byte
	Env   map[string]string
	// Limits bound the run; OutputBytes counts stdout and stderr together.
	Limits  coderun.Limits
	Network bool
	// User is the uid:gid the program runs as; never root.
	User string
	// Labels are added to the sandbox beside the executor's own.
	Labels map[string]string
}

// WorkDir is where a run's files live and its program starts.
const WorkDir = "/workspace"

// File is one file delivered to a run.
type File struct {
	Path string // relative to WorkDir
	Data []byte
	Mode fs.FileMode
}

// Sink receives a run's output and its start, from one goroutine, in order.
type Sink interface {
	// Started is called once, when the program has started.
	Started(at time.Time)
	// Output is called with each piece of output, in the order it was written
	// (within a stream; the two streams interleave as read).
	Output(c Chunk)
}

// Chunk is a piece of output.
type Chunk struct {
	Stream coderun.Stream
	Data   []byte
	At     time.Time
}

// End says how a program ended.
type End string

const (
	Exited             End = "exited"               // on its own; see ExitCode
	OOMKilled          End = "oom_killed"           // killed for exceeding its memory
	TimedOut           End = "timed_out"            // killed at its wall-time limit
	OutputLimitReached End = "output_limit_reached" // killed on writing past OutputBytes
	Cancelled          End = "cancelled"            // killed because ctx was cancelled
)

// Outcome is how a run ended.
type Outcome struct {
	End      End
	ExitCode int
	// StartedAt and FinishedAt bound the program's life.
	StartedAt, FinishedAt time.Time
	// StdoutBytes and StderrBytes count what was delivered to the sink; output
	// past the limit is dropped and Truncated set.
	StdoutBytes, StderrBytes int64
	Truncated                bool
}

// Errors an executor reports for the run's platform, not for the program.
var (
	// ErrImageUnavailable: the run's image is not on the engine.
	ErrImageUnavailable = errors.New("image unavailable")
	// ErrImageUnsupported: the run's image asks for something a sandbox
	// cannot give it; the error's text says what, for the image's owner.
	ErrImageUnsupported = errors.New("image unsupported")
	// ErrUnavailable: the engine cannot be reached or failed.
	ErrUnavailable = errors.New("executor unavailable")
)
