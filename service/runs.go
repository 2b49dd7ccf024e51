package service

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// Bounds on what one run may carry.
const (
	maxRunFiles     = 100
	maxRunArgs      = 256
	maxRunEnv       = 100
	maxRunLabels    = 32
	maxLabelKey     = 63
	maxLabelValue   = 255
	maxEnvValue     = 32 << 10
	maxArgLen       = 32 << 10
	activeRetryHint = 5 * time.Second
)

var (
	envNamePattern  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	labelKeyPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62})$`)
)

// RunNotifier is told when a run has been queued or asked to stop, so that an
// in-process worker need not wait for its next poll.
type RunNotifier interface {
	RunQueued()
	CancelRequested(runID string)
}

// SubmitRun queues code to run in one of handle's validated runtimes. The
// capacity check and the insert happen in one transaction, so concurrent
// submissions cannot overshoot the handle's active-run limit. replayed reports
// an answer repeated for idem rather than a new run.
func (s *Service) SubmitRun(ctx context.Context, handle string, in coderun.RunInput, idem IdempotencyKey) (run coderun.Run, replayed bool, err error) {
	w := write{handle: handle, scope: coderun.ScopeRunsWrite, role: coderun.RoleDeveloper, key: idem, op: "SubmitRun", input: in}
	replayed, _, err = s.commit(ctx, w, &run, func(tx *store.Tx) (outcome, error) {
		var err error
		run, err = s.submitRun(ctx, tx, handle, in)
		return outcomeAccepted, err
	})
	if err != nil || replayed {
		return run, replayed, err
	}
	s.published(run.ID)
	if s.opts.Runs != nil {
		s.opts.Runs.RunQueued()
	}
	return run, false, nil
}

// submitRun is SubmitRun's write; the caller holds the handle's row.
func (s *Service) submitRun(ctx context.Context, tx *store.Tx, handle string, in coderun.RunInput) (coderun.Run, error) {
	if in.RuntimeKey == "" {
		var errs coderun.ValidationErrors
		errs.Add("runtimeKey", "required", "runtimeKey is required")
		return coderun.Run{}, errs.Err()
	}
	rt, err := tx.GetRuntime(ctx, handle, in.RuntimeKey)
	if err != nil {
		return coderun.Run{}, err
	}
	// The server's policy now, not when the runtime was put, bounds the run.
	if rt.Network && !s.opts.AllowNetwork {
		return coderun.Run{}, coderun.Errorf(coderun.EConflict,
			"runtime %q asks for a network, which this server no longer gives runs; PUT it with network false", rt.Key)
	}
	if !imageAllowed(s.opts.ImagePrefixes, handle, rt.Image) {
		return coderun.Run{}, coderun.Errorf(coderun.EConflict,
			"runtime %q uses %s, which this server no longer runs (only images under %s)", rt.Key, rt.Image, strings.Join(s.opts.ImagePrefixes, ", "))
	}
	rt.Limits = lowerLimits(rt.Limits, s.opts.MaxLimits)
	job, limits, err := jobFromInput(rt, in)
	if err != nil {
		return coderun.Run{}, err
	}
	if !rt.Validated() {
		return coderun.Run{}, coderun.Errorf(coderun.ERuntimeNotValidated,
			"runtime %q is %s for digest %s; validate its image first (POST …/validate-image)", rt.Key, rt.Validation.Status, rt.Digest)
	}
	h, err := tx.GetHandle(ctx, handle)
	if err != nil {
		return coderun.Run{}, err
	}
	active, err := tx.CountActiveRuns(ctx, handle)
	if err != nil {
		return coderun.Run{}, err
	}
	if active >= h.MaxActiveRuns {
		e := coderun.Errorf(coderun.EActiveRunLimit, "handle %q has %d active runs, its limit; wait for one to finish", handle, active)
		e.RetryAfter = activeRetryHint
		e.Details = map[string]any{"activeRuns": active, "limit": h.MaxActiveRuns}
		e.Quota = &coderun.Quota{Policy: "active-runs", Limit: h.MaxActiveRuns}
		return coderun.Run{}, e
	}
	now := s.now()
	run := coderun.Run{
		ID:          "run_" + ulid.Make().String(),
		Handle:      handle,
		RuntimeKey:  rt.Key,
		Image:       job.Image,
		Status:      coderun.RunQueued,
		Limits:      limits,
		Labels:      in.Labels,
		CreatedAt:   now,
		Transitions: []coderun.Transition{{Status: coderun.RunQueued, At: now, Reason: "submitted"}},
	}
	if run.Labels == nil {
		run.Labels = map[string]string{}
	}
	job.RunID, job.Handle = run.ID, handle
	return run, tx.CreateRun(ctx, run, job)
}

// lowerLimits is l with each limit at most max's.
func lowerLimits(l, max coderun.Limits) coderun.Limits {
	l.TimeoutSeconds = min(l.TimeoutSeconds, max.TimeoutSeconds)
	l.MemoryMiB = min(l.MemoryMiB, max.MemoryMiB)
	l.CPUs = min(l.CPUs, max.CPUs)
	l.Pids = min(l.Pids, max.Pids)
	l.OutputBytes = min(l.OutputBytes, max.OutputBytes)
	return l
}

// jobFromInput validates in against rt and returns the job a worker will run
// and the run's effective limits.
func jobFromInput(rt coderun.Runtime, in coderun.RunInput) (coderun.RunJob, coderun.Limits, error) {
	var errs coderun.ValidationErrors
	limits := rt.Limits
	if in.TimeoutSeconds != nil {
		t := *in.TimeoutSeconds
		switch {
		case t < 1:
			errs.Add("timeoutSeconds", "out_of_range", "timeoutSeconds must be at least 1")
		case t > rt.Limits.TimeoutSeconds:
			errs.Add("timeoutSeconds", "above_runtime_limit", "timeoutSeconds may lower the runtime's limit of %d, not raise it", rt.Limits.TimeoutSeconds)
		default:
			limits.TimeoutSeconds = t
		}
	}
	var files []coderun.RunFile
	seen := map[string]bool{}
	if in.Code != nil {
		files = append(files, coderun.RunFile{Path: rt.EntrypointFile, Data: []byte(*in.Code)})
		seen[rt.EntrypointFile] = true
	}
	if in.Code == nil && len(in.Files) == 0 {
		errs.Add("code", "required", "code or files is required")
	}
	if len(in.Files) > maxRunFiles {
		errs.Add("files", "too_many", "at most %d files", maxRunFiles)
	}
	for i, f := range in.Files {
		field := fmt.Sprintf("files[%d]", i)
		if !validWorkspacePath(f.Path) {
			errs.Add(field+".path", "invalid", "path must be a relative path inside the workspace, without '..'")
			continue
		}
		if seen[f.Path] {
			errs.Add(field+".path", "duplicate", "%s is given twice (code is written to %s)", f.Path, rt.EntrypointFile)
			continue
		}
		seen[f.Path] = true
		var data []byte
		switch f.Encoding {
		case "", coderun.EncodingUTF8:
			data = []byte(f.Content)
		case coderun.EncodingBase64:
			b, err := base64.StdEncoding.DecodeString(f.Content)
			if err != nil {
				errs.Add(field+".content", "invalid", "content is not valid base64")
				continue
			}
			data = b
		default:
			errs.Add(field+".encoding", "invalid", "encoding must be utf8 or base64")
			continue
		}
		files = append(files, coderun.RunFile{Path: f.Path, Data: data})
	}
	if len(in.Args) > maxRunArgs {
		errs.Add("args", "too_many", "at most %d args", maxRunArgs)
	}
	for i, a := range in.Args {
		if len(a) > maxArgLen || strings.ContainsRune(a, 0) {
			errs.Add(fmt.Sprintf("args[%d]", i), "invalid", "an arg must be at most %d bytes without NUL", maxArgLen)
		}
	}
	if len(in.Env) > maxRunEnv {
		errs.Add("env", "too_many", "at most %d variables", maxRunEnv)
	}
	for k, v := range in.Env {
		if !envNamePattern.MatchString(k) {
			errs.Add("env."+k, "invalid", "a variable name must match %s", envNamePattern)
		}
		if len(v) > maxEnvValue || strings.ContainsRune(v, 0) {
			errs.Add("env."+k, "invalid", "a value must be at most %d bytes without NUL", maxEnvValue)
		}
	}
	if len(in.Labels) > maxRunLabels {
		errs.Add("labels", "too_many", "at most %d labels", maxRunLabels)
	}
	for k, v := range in.Labels {
		if !labelKeyPattern.MatchString(k) {
			errs.Add("labels."+k, "invalid", "a label key must match %s", labelKeyPattern)
		}
		if len(v) > maxLabelValue || !utf8.ValidString(v) {
			errs.Add("labels."+k, "invalid", "a label value must be UTF-8 of at most %d bytes", maxLabelValue)
		}
	}
	if err := errs.Err(); err != nil {
		return coderun.RunJob{}, limits, err
	}
	job := coderun.RunJob{
		Image:   rt.PinnedImage(),
		Command: rt.Command,
		Args:    in.Args,
		Network: rt.Network,
		Limits:  limits,
		Files:   files,
		Stdin:   []byte(in.Stdin),
		Env:     in.Env,
	}
	return job, limits, nil
}

// Run returns one run of handle, with its transitions.
func (s *Service) Run(ctx context.Context, handle, runID string) (coderun.Run, error) {
	var run coderun.Run
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, coderun.ScopeRunsRead, coderun.RoleViewer); err != nil {
			return err
		}
		var err error
		run, err = tx.GetRun(ctx, handle, runID)
		return err
	})
	return run, err
}

// RunList is a page of runs with the handle's capacity beside it.
type RunList struct {
	coderun.Page[coderun.Run]
	ActiveRuns, ActiveRunLimit int
}

// ListRuns returns handle's runs, newest first, optionally only those in the
// given statuses.
func (s *Service) ListRuns(ctx context.Context, handle string, statuses []coderun.RunStatus, cursor string, limit int) (RunList, error) {
	var list RunList
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, coderun.ScopeRunsRead, coderun.RoleViewer); err != nil {
			return err
		}
		limit, err := pageSize(limit)
		if err != nil {
			return err
		}
		before, err := decodeCursor(cursor)
		if err != nil {
			return err
		}
		runs, err := tx.ListRuns(ctx, handle, statuses, before, limit+1)
		if err != nil {
			return err
		}
		list.Page = pageOf(runs, limit, func(r coderun.Run) string { return r.ID })
		h, err := tx.GetHandle(ctx, handle)
		if err != nil {
			return err
		}
		list.ActiveRunLimit = h.MaxActiveRuns
		list.ActiveRuns, err = tx.CountActiveRuns(ctx, handle)
		return err
	})
	return list, err
}

// RunOutput is a run's output: whole (Chunks nil, Stdout and Stderr joined), or
// the chunks after a sequence number.
type RunOutput struct {
	Run    coderun.Run
	Chunks []coderun.OutputChunk
	// Complete: the run is finished and every chunk it wrote is here or before.
	Complete bool
	// LastSeq is the highest seq returned (or afterSeq when none was); pass it
	// as afterSeq to continue.
	LastSeq int64
}

// Output returns the chunks of a run with seq > afterSeq, at most limit of
// them (0: all). An errored run that wrote nothing has no output to give.
func (s *Service) Output(ctx context.Context, handle, runID string, afterSeq int64, limit int) (RunOutput, error) {
	var out RunOutput
	if afterSeq < 0 {
		var errs coderun.ValidationErrors
		errs.Add("afterSeq", "out_of_range", "afterSeq must be 0 or more")
		return out, errs.Err()
	}
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, coderun.ScopeRunsRead, coderun.RoleViewer); err != nil {
			return err
		}
		run, err := tx.GetRun(ctx, handle, runID)
		if err != nil {
			return err
		}
		if run.Status == coderun.RunErrored && run.Output.StdoutBytes+run.Output.StderrBytes == 0 {
			code := ""
			if run.Error != nil {
				code = run.Error.Code
			}
			return coderun.Errorf(coderun.EOutputUnavailable,
				"run %s ended errored (%s) without output; its transitions say what happened", run.ID, code)
		}
		chunks, err := tx.Output(ctx, runID, afterSeq, limit)
		if err != nil {
			return err
		}
		out = RunOutput{Run: run, Chunks: chunks, LastSeq: afterSeq}
		if n := len(chunks); n > 0 {
			out.LastSeq = chunks[n-1].Seq
		}
		// Read in the same transaction as the run: a terminal run's chunks
		// are all written before its status, so none can be missing.
		out.Complete = run.Status.Terminal() && (limit == 0 || len(chunks) < limit)
		return nil
	})
	return out, err
}

// cancelWait is how long a cancel waits for a running run to stop, so that
// the answer usually shows it cancelled.
const cancelWait = 5 * time.Second

// CancelRun stops a run: a queued one is cancelled at once; a starting or
// running one is killed by its worker and then cancelled, and the answer
// waits (up to cancelWait) to show it so. Cancelling again is harmless;
// cancelling a finished run is a conflict. replayed reports an answer
// repeated for idem rather than a new cancel: the run as the first answer
// showed it.
func (s *Service) CancelRun(ctx context.Context, handle, runID string, idem IdempotencyKey) (run coderun.Run, replayed bool, err error) {
	w := write{handle: handle, scope: coderun.ScopeRunsWrite, role: coderun.RoleDeveloper, key: idem, op: "CancelRun", input: struct {
		RunID string `json:"runId"`
	}{runID}}
	replayed, _, err = s.commitThen(ctx, w, &run, func(tx *store.Tx) (outcome, error) {
		var err error
		run, err = s.cancelRun(ctx, tx, handle, runID)
		return outcomeAccepted, err
	}, func(ctx context.Context) {
		if run.Status.Terminal() {
			s.published(runID)
			return
		}
		if s.opts.Runs != nil {
			s.opts.Runs.CancelRequested(runID)
		}
		// The caller may have gone: then the answer kept is the run when
		// the wait ends, all the same.
		if stopped, err := s.awaitTerminal(ctx, handle, runID, cancelWait); err == nil {
			run = stopped
		} else {
			s.log.WarnContext(ctx, "cancel: read the run back", "run", runID, "err", err)
		}
	})
	return run, replayed, err
}

// cancelRun is CancelRun's write.
func (s *Service) cancelRun(ctx context.Context, tx *store.Tx, handle, runID string) (coderun.Run, error) {
	run, err := tx.GetRun(ctx, handle, runID)
	if err != nil {
		return run, err
	}
	if run.Status.Terminal() {
		if run.Status == coderun.RunCancelled {
			return run, nil
		}
		return run, coderun.Errorf(coderun.ERunAlreadyFinished, "run %s already finished: %s", runID, run.Status)
	}
	now := s.now()
	err = coderun.Errorf(coderun.EConflict, "not queued")
	if run.Status == coderun.RunQueued {
		err = tx.FinishQueuedRun(ctx, runID, coderun.RunCancelled, now, "cancelled by "+principalName(ctx))
	}
	// A worker may have claimed it meanwhile: then its worker stops it.
	if coderun.ErrorCode(err) == coderun.EConflict {
		err = tx.RequestCancel(ctx, runID, now)
	}
	if err != nil {
		return run, err
	}
	return tx.GetRun(ctx, handle, runID)
}

// awaitTerminal polls a run until it is terminal or wait has passed, and
// returns it as it then stands.
func (s *Service) awaitTerminal(ctx context.Context, handle, runID string, wait time.Duration) (coderun.Run, error) {
	deadline := time.Now().Add(wait)
	for {
		var run coderun.Run
		err := s.db.Read(ctx, func(tx *store.Tx) error {
			var err error
			run, err = tx.GetRun(ctx, handle, runID)
			return err
		})
		if err != nil || run.Status.Terminal() || time.Now().After(deadline) {
			return run, err
		}
		select {
		case <-ctx.Done():
			return run, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// published tells followers that runID committed a change.
func (s *Service) published(runID string) {
	if s.opts.Publish != nil {
		s.opts.Publish.RunChanged(runID)
	}
}

func principalName(ctx context.Context) string {
	if p := coderun.PrincipalFromContext(ctx); p != nil {
		return p.UserID
	}
	return "the operator"
}
