package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Bounds on the engine's work around a program, whatever the caller's context.
const (
	// engineTimeout bounds each request that must outlive ctx: creating,
	// starting, killing, inspecting.
	engineTimeout = 15 * time.Second
	// exitTimeout bounds the wait for the engine to report the exit of a
	// program it was told to kill.
	exitTimeout = 15 * time.Second
	// drainTimeout bounds reading what a program wrote before it exited, once
	// the engine has reported the exit.
	drainTimeout = 5 * time.Second
)

// sandbox is a run's container, created and not yet started.
type sandbox struct {
	cli    *client.Client
	id     string // the container's
	runID  string
	stdin  []byte
	limits coderun.Limits // with defaults filled in
	ran    atomic.Bool
}

// Run starts the program and follows it to its end (DESIGN.md "Execution"):
// the attachment and the wait are in place before the start, so no output and
// no exit is missed; one goroutine (this one) delivers to sink; and whatever
// ends the run, the program is dead and inspected before Run returns.
func (s *sandbox) Run(ctx context.Context, sink executor.Sink) (executor.Outcome, error) {
	if s.ran.Swap(true) {
		return executor.Outcome{}, fmt.Errorf("run %s: its sandbox has already run", s.runID)
	}
	if ctx.Err() != nil {
		// Cancelled before it started: nothing ran, nothing to kill.
		return executor.Outcome{End: executor.Cancelled}, nil
	}
	// The engine's work from the start on must finish when ctx ends: a
	// cancelled program is still killed, waited for and inspected.
	engine := context.WithoutCancel(ctx)

	attach, err := s.cli.ContainerAttach(ctx, s.id, client.ContainerAttachOptions{
		Stream: true, Stdin: true, Stdout: true, Stderr: true,
	})
	if err != nil {
		return executor.Outcome{}, engineError(ctx, "attach to run "+s.runID, err)
	}
	defer attach.Close()

	waitCtx, stopWaiting := context.WithCancel(engine)
	defer stopWaiting()
	exit := s.cli.ContainerWait(waitCtx, s.id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	select {
	case err := <-exit.Error: // the engine refused the wait
		return executor.Outcome{}, engineError(ctx, "wait for run "+s.runID, err)
	default:
	}

	if err := s.start(engine); err != nil {
		return executor.Outcome{}, err
	}
	r := &running{sink: sink, budget: s.limits.OutputBytes}
	r.outcome.StartedAt = time.Now()
	sink.Started(r.outcome.StartedAt)

	go func() {
		// A program may end without reading its input: a failed write is no
		// failure of the run.
		if len(s.stdin) > 0 {
			attach.Conn.Write(s.stdin)
		}
		attach.CloseWrite() // the program reads EOF
	}()

	output := make(chan executor.Chunk)
	over := make(chan struct{}) // closed when Run stops reading output
	defer close(over)
	var streamErr error // set before output is closed
	go func() {
		defer close(output)
		_, streamErr = stdcopy.StdCopy(
			chunkWriter{stream: coderun.Stdout, to: output, over: over},
			chunkWriter{stream: coderun.Stderr, to: output, over: over},
			attach.Reader)
	}()

	timeout := time.NewTimer(time.Duration(s.limits.TimeoutSeconds) * time.Second)
	defer timeout.Stop()
	var (
		stop      executor.End          // why Run killed the program; "" while it runs its course
		cancelled = ctx.Done()          // nil once the program is killed or has exited
		expired   = timeout.C           // likewise
		killed    = make(chan error, 1) // the kill's outcome
		exited    bool                  // the engine reported the exit
		deadline  <-chan time.Time      // bounds the engine once the program is killed or exited
	)
	// stopFor kills the program in the background: the engine completes a kill
	// only once the program's output has been read, so reading goes on.
	stopFor := func(why executor.End) {
		stop, cancelled, expired = why, nil, nil
		deadline = time.After(exitTimeout)
		go func() { killed <- s.kill(engine) }()
	}
	// abandon gives up on a run the engine failed, killing the program.
	abandon := func(err error) (executor.Outcome, error) {
		attach.Close() // nothing more is read: the kill must not wait for it
		return executor.Outcome{}, errors.Join(err, s.kill(engine))
	}
	for !exited || output != nil {
		select {
		case <-exit.Result:
			exited, cancelled, expired = true, nil, nil
			r.outcome.FinishedAt = time.Now()
			deadline = time.After(drainTimeout)
		case err := <-exit.Error:
			return abandon(engineError(engine, "wait for run "+s.runID, err))
		case err := <-killed:
			if err != nil {
				return executor.Outcome{}, err
			}
		case c, ok := <-output:
			switch {
			case !ok && streamErr != nil:
				return abandon(fmt.Errorf("read the output of run %s: %w: %w", s.runID, executor.ErrUnavailable, streamErr))
			case !ok:
				output = nil
			case r.deliver(c) && !exited && stop == "":
				stopFor(executor.OutputLimitReached)
			}
		case <-expired:
			stopFor(executor.TimedOut)
		case <-cancelled:
			stopFor(executor.Cancelled)
		case <-deadline:
			if !exited {
				return abandon(fmt.Errorf("run %s: %w: the engine reported no exit within %s of the kill",
					s.runID, executor.ErrUnavailable, exitTimeout))
			}
			// The output stream outlives the program (an engine that does not
			// close it): what was not read by now is given up.
			output = nil
		}
	}

	inspectCtx, cancel := context.WithTimeout(engine, engineTimeout)
	defer cancel()
	info, err := s.cli.ContainerInspect(inspectCtx, s.id, client.ContainerInspectOptions{})
	if err != nil {
		return executor.Outcome{}, engineError(inspectCtx, "inspect run "+s.runID, err)
	}
	state := info.Container.State
	r.outcome.ExitCode = state.ExitCode
	switch {
	case state.OOMKilled: // whoever else ended it, the memory limit did first
		r.outcome.End = executor.OOMKilled
	case stop != "":
		r.outcome.End = stop
	default:
		r.outcome.End = executor.Exited
	}
	return r.outcome, nil
}

// start starts the program, on ctx's values but a timeout of its own.
func (s *sandbox) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	if _, err := s.cli.ContainerStart(ctx, s.id, client.ContainerStartOptions{}); err != nil {
		return engineError(ctx, "start run "+s.runID, err)
	}
	return nil
}

// kill kills the program, on ctx's values but a timeout of its own. A program
// that exited meanwhile is no failure.
func (s *sandbox) kill(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	_, err := s.cli.ContainerKill(ctx, s.id, client.ContainerKillOptions{Signal: "KILL"})
	if err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("kill run %s: %w: %w", s.runID, executor.ErrUnavailable, err)
	}
	return nil
}

// running is the account of a started program's output, kept by Run's
// goroutine alone.
type running struct {
	sink    executor.Sink
	budget  int64 // output bytes still to deliver
	outcome executor.Outcome
}

// deliver passes c to the sink, cut to what the output limit leaves, and
// reports whether the limit has been exceeded (output dropped).
func (r *running) deliver(c executor.Chunk) (exceeded bool) {
	if int64(len(c.Data)) > r.budget {
		c.Data = c.Data[:r.budget]
		r.outcome.Truncated = true
	}
	if len(c.Data) > 0 {
		r.budget -= int64(len(c.Data))
		if c.Stream == coderun.Stderr {
			r.outcome.StderrBytes += int64(len(c.Data))
		} else {
			r.outcome.StdoutBytes += int64(len(c.Data))
		}
		r.sink.Output(c)
	}
	return r.outcome.Truncated
}

// errRunOver ends the output stream's reading once Run has returned.
var errRunOver = errors.New("run over")

// chunkWriter hands what the program writes on one stream to Run's goroutine.
type chunkWriter struct {
	stream coderun.Stream
	to     chan<- executor.Chunk
	over   <-chan struct{}
}

func (w chunkWriter) Write(p []byte) (int, error) {
	// stdcopy reuses p for the next frame.
	c := executor.Chunk{Stream: w.stream, Data: bytes.Clone(p), At: time.Now()}
	select {
	case w.to <- c:
		return len(p), nil
	case <-w.over:
		return 0, errRunOver
	}
}
