package coderun

import (
	"encoding/base64"
	"slices"
	"time"
	"unicode/utf8"
)

// RunStatus is where a run stands: queued → starting → running → one terminal status.
type RunStatus string

const (
	RunQueued    RunStatus = "queued"
	RunStarting  RunStatus = "starting"
	RunRunning   RunStatus = "running"
	RunSucceeded RunStatus = "succeeded"
	RunFailed    RunStatus = "failed"
	RunTimedOut  RunStatus = "timed_out"
	RunCancelled RunStatus = "cancelled"
	RunErrored   RunStatus = "errored"
)

// RunStatuses lists every status in lifecycle order.
var RunStatuses = []RunStatus{RunQueued, RunStarting, RunRunning, RunSucceeded, RunFailed, RunTimedOut, RunCancelled, RunErrored}

// ActiveRunStatuses are the statuses that count against a handle's capacity.
var ActiveRunStatuses = []RunStatus{RunQueued, RunStarting, RunRunning}

// Terminal reports whether a run in this status is finished for good.
func (s RunStatus) Terminal() bool { return s.Valid() && !s.Active() }

// Active reports whether a run in this status is queued, starting or running.
func (s RunStatus) Active() bool { return slices.Contains(ActiveRunStatuses, s) }

// Valid reports whether s is a known status.
func (s RunStatus) Valid() bool { return slices.Contains(RunStatuses, s) }

// Why a run failed or errored (Run.Error.Code) beyond a plain non-zero exit.
const (
	ErrOOMKilled           = "oom_killed"
	ErrOutputLimitExceeded = "output_limit_exceeded"
	ErrNonZeroExit         = "non_zero_exit"
	ErrImageUnavailable    = "image_unavailable"
	ErrImageUnsupported    = "image_unsupported"
	ErrExecutorUnavailable = "executor_unavailable"
	ErrWorkerLost          = "worker_lost"
)

// Run is one execution of code in a runtime.
type Run struct {
	ID         string `json:"runId"`
	Handle     string `json:"handle"`
	RuntimeKey string `json:"runtimeKey"`
	// Image is the image reference pinned by digest, as validated.
	Image       string            `json:"image"`
	Status      RunStatus         `json:"status"`
	ExitCode    *int              `json:"exitCode"`
	Error       *ErrorDetail      `json:"error"`
	Limits      Limits            `json:"limits"`
	Labels      map[string]string `json:"labels"`
	CreatedAt   time.Time         `json:"createdAt"`
	StartedAt   *time.Time        `json:"startedAt"`
	FinishedAt  *time.Time        `json:"finishedAt"`
	DurationMs  *int64            `json:"durationMs"`
	Output      OutputSummary     `json:"output"`
	Transitions []Transition      `json:"transitions"`
}

// OutputSummary counts what a run wrote.
type OutputSummary struct {
	StdoutBytes int64 `json:"stdoutBytes"`
	StderrBytes int64 `json:"stderrBytes"`
	Truncated   bool  `json:"truncated"`
}

// Transition is one recorded change of a run's status.
type Transition struct {
	Status RunStatus `json:"status"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// Stream names an output stream.
type Stream string

const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// OutputChunk is a piece of a run's output. A run's chunks are numbered 1, 2,
// 3, … with no gaps, across both streams, in the order they were written.
type OutputChunk struct {
	Seq    int64     `json:"seq"`
	Stream Stream    `json:"stream"`
	Data   []byte    `json:"data"`
	At     time.Time `json:"at"`
}

// RunInput is a request to run code in a runtime.
type RunInput struct {
	RuntimeKey string `json:"runtimeKey"`
	// Code becomes the runtime's entrypoint file.
	Code  *string           `json:"code"`
	Files []FileInput       `json:"files"`
	Stdin string            `json:"stdin"`
	Args  []string          `json:"args"`
	Env   map[string]string `json:"env"`
	// TimeoutSeconds may lower the runtime's limit, never raise it.
	TimeoutSeconds *int              `json:"timeoutSeconds"`
	Labels         map[string]string `json:"labels"`
}

// FileInput is a file delivered to a run's workspace.
type FileInput struct {
	Path     string `json:"path"`
	Content  string `json:"content"`
	Encoding string `json:"encoding"` // utf8 (default) or base64
}

// RunFile is a decoded file of a run.
type RunFile struct {
	Path string `json:"path"`
	Data []byte `json:"data"`
}

// RunJob is what a worker needs to execute a run: the runtime as it was when
// the run was submitted, and the caller's input, decoded.
type RunJob struct {
	RunID  string
	Handle string
	Image  string
	// Command is the runtime's; empty means the image's own.
	Command []string
	// Args follow Command.
	Args    []string
	Network bool
	Limits  Limits
	Files   []RunFile
	Stdin   []byte
	Env     map[string]string
}

// How bytes travel in a text field ("encoding" in the API): as they are when
// they are UTF-8, else as standard base64. FileInput.Encoding takes these, and
// run output is answered in one of them.
const (
	EncodingUTF8   = "utf8"
	EncodingBase64 = "base64"
)

// OutputEncoding is how a set of chunks is written as text: EncodingUTF8 when
// every chunk is UTF-8, else EncodingBase64 for all of them, so that a client
// decodes one page one way.
func OutputEncoding(chunks []OutputChunk) string {
	for _, c := range chunks {
		if !utf8.Valid(c.Data) {
			return EncodingBase64
		}
	}
	return EncodingUTF8
}

// EncodeText writes b as text in encoding (EncodingUTF8 or EncodingBase64).
func EncodeText(b []byte, encoding string) string {
	if encoding == EncodingBase64 {
		return base64.StdEncoding.EncodeToString(b)
	}
	return string(b)
}

// RunStatusEvent is a run's status as a subscriber sees it: the current one
// first, then one per transition.
type RunStatusEvent struct {
	RunID    string       `json:"runId"`
	Status   RunStatus    `json:"status"`
	At       time.Time    `json:"at"`
	Reason   string       `json:"reason"`
	ExitCode *int         `json:"exitCode"`
	Error    *ErrorDetail `json:"error"`
}
