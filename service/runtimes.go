package service

import (
	"context"
	"encoding/base64"
	"path"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// Defaults for the optional fields of a runtime.
const (
	defaultEntrypointFile = "main"
	defaultPageSize       = 50
	maxPageSize           = 100
)

// Runtime returns one runtime of handle.
func (s *Service) Runtime(ctx context.Context, handle, key string) (coderun.Runtime, error) {
	var rt coderun.Runtime
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, coderun.ScopeRuntimesRead, coderun.RoleViewer); err != nil {
			return err
		}
		var err error
		rt, err = tx.GetRuntime(ctx, handle, key)
		return err
	})
	return rt, err
}

// ListRuntimes returns a page of handle's runtimes ordered by key. cursor is ""
// for the first page, else the NextCursor of the previous one.
func (s *Service) ListRuntimes(ctx context.Context, handle, cursor string, limit int) (coderun.Page[coderun.Runtime], error) {
	var page coderun.Page[coderun.Runtime]
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, coderun.ScopeRuntimesRead, coderun.RoleViewer); err != nil {
			return err
		}
		limit, err := pageSize(limit)
		if err != nil {
			return err
		}
		after, err := decodeCursor(cursor)
		if err != nil {
			return err
		}
		items, err := tx.ListRuntimes(ctx, handle, after, limit+1)
		page = pageOf(items, limit, func(rt coderun.Runtime) string { return rt.Key })
		return err
	})
	return page, err
}

// PutRuntime creates or replaces the runtime key of handle. A replaced runtime
// keeps its validation only when its image and digest are unchanged. replayed
// reports an answer repeated for idem rather than a new write.
func (s *Service) PutRuntime(ctx context.Context, handle, key string, in coderun.RuntimeInput, idem IdempotencyKey) (rt coderun.Runtime, created, replayed bool, err error) {
	w := write{handle: handle, scope: coderun.ScopeRuntimesWrite, role: coderun.RoleAdmin, key: idem, op: "PutRuntime", input: struct {
		Key string               `json:"key"`
		In  coderun.RuntimeInput `json:"in"`
	}{key, in}}
	var o outcome
	replayed, o, err = s.commit(ctx, w, &rt, func(tx *store.Tx) (outcome, error) {
		var err error
		if rt, created, err = s.putRuntime(ctx, tx, handle, key, in); err != nil || !created {
			return outcomeOK, err
		}
		return outcomeCreated, nil
	})
	created = o == outcomeCreated
	return rt, created, replayed, err
}

// putRuntime is PutRuntime's write.
func (s *Service) putRuntime(ctx context.Context, tx *store.Tx, handle, key string, in coderun.RuntimeInput) (rt coderun.Runtime, created bool, err error) {
	if rt, err = s.runtimeFromInput(handle, key, in); err != nil {
		return rt, false, err
	}
	now := s.now()
	rt.CreatedAt, rt.UpdatedAt = now, now
	rt.Validation = coderun.Validation{Status: coderun.ValidationPending}
	old, err := tx.GetRuntime(ctx, handle, key)
	switch {
	case err == nil:
		rt.CreatedAt = old.CreatedAt
		if old.Image == rt.Image && old.Digest == rt.Digest {
			rt.Validation = old.Validation
		}
	case coderun.ErrorCode(err) != coderun.ERuntimeNotFound:
		return rt, false, err
	}
	created, err = tx.PutRuntime(ctx, rt)
	return rt, created, err
}

// ValidateRuntimeImage checks the runtime's image and digest against the
// registry (or the local engine), pulls image@digest, and records the outcome.
// The check runs outside any transaction: it may take minutes. replayed
// reports an answer repeated for idem rather than a new check.
func (s *Service) ValidateRuntimeImage(ctx context.Context, handle, key string, idem IdempotencyKey) (rt coderun.Runtime, replayed bool, err error) {
	w := write{handle: handle, scope: coderun.ScopeRuntimesWrite, role: coderun.RoleAdmin, key: idem, op: "ValidateRuntimeImage", input: struct {
		Key string `json:"key"`
	}{key}, lease: validationLease}
	// A retry of a finished check need not check again; one made during the
	// check is told it is in flight.
	c, replayed, _, err := s.begin(ctx, w, &rt)
	if err != nil || replayed {
		return rt, replayed, err
	}
	defer s.settle(ctx, c, &err)
	// The check is the costly part: a handle out of writes for today, or
	// already checking as many images as it may at once, does not start one.
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := authorize(ctx, tx, handle, w.scope, w.role); err != nil {
			return err
		}
		h, err := tx.GetHandle(ctx, handle)
		if err != nil {
			return err
		}
		if err := dailyWriteLeft(ctx, tx, h, s.now()); err != nil {
			return err
		}
		rt, err = tx.GetRuntime(ctx, handle, key)
		return err
	})
	if err != nil {
		return rt, false, err
	}
	if !imageAllowed(s.opts.ImagePrefixes, handle, rt.Image) {
		return rt, false, coderun.Errorf(coderun.EConflict,
			"runtime %q uses %s, which this server does not run (only images under %s)", key, rt.Image, strings.Join(s.opts.ImagePrefixes, ", "))
	}
	if s.images == nil {
		return rt, false, coderun.Errorf(coderun.EUnavailable, "no container engine is configured")
	}
	done, err := s.checks.start(handle)
	if err != nil {
		return rt, false, err
	}
	defer done()
	resolved, fail, err := s.images.CheckImage(ctx, rt.Image, rt.Digest)
	if err != nil {
		s.log.ErrorContext(ctx, "image check failed", "handle", handle, "runtime", key, "err", err)
		return rt, false, coderun.Errorf(coderun.EUnavailable, "the container engine is unavailable; try again later")
	}
	checked := rt
	now := s.now()
	v := coderun.Validation{Status: coderun.ValidationValidated, CheckedAt: &now, Error: fail}
	if fail != nil {
		v.Status = coderun.ValidationFailed
	}
	if resolved != "" {
		v.ResolvedDigest = &resolved
	}
	// Authorized again: the caller's role may have changed during the check.
	_, err = s.finish(ctx, w, c, &rt, func(tx *store.Tx) (outcome, error) {
		var err error
		if rt, err = tx.GetRuntime(ctx, handle, key); err != nil {
			return 0, err
		}
		// A PUT that changed the image while we checked it wins: the
		// outcome we hold is for bytes the runtime no longer names.
		if rt.Image != checked.Image || rt.Digest != checked.Digest {
			return outcomeOK, nil
		}
		rt.Validation = v
		_, err = tx.PutRuntime(ctx, rt)
		return outcomeOK, err
	})
	return rt, false, err
}

// maxImageChecksPerHandle is how many image checks one handle may have
// running at once in one process: each may pull an image for minutes.
const maxImageChecksPerHandle = 2

// imageChecks counts the image checks running per handle.
type imageChecks struct {
	mu      sync.Mutex
	running map[string]int
	// releasing is held for reading by every check and for writing while
	// images are released, so that none is released while a check pulls it.
	releasing sync.RWMutex
}

// start counts a check of handle's, or refuses it with ERateLimited when
// the handle has maxImageChecksPerHandle running; done ends it. A check
// waits for a release of images in progress to end.
func (c *imageChecks) start(handle string) (done func(), err error) {
	if err := c.count(handle, 1); err != nil {
		return nil, err
	}
	c.releasing.RLock()
	return func() {
		c.releasing.RUnlock()
		c.count(handle, -1)
	}, nil
}

// count adds n to the checks handle has running, unless that would take it
// past maxImageChecksPerHandle.
func (c *imageChecks) count(handle string, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > 0 && c.running[handle]+n > maxImageChecksPerHandle {
		e := coderun.Errorf(coderun.ERateLimited, "handle %q is checking %d images already; try again when one is done", handle, maxImageChecksPerHandle)
		e.RetryAfter = 5 * time.Second
		e.Quota = &coderun.Quota{Policy: "image-checks", Limit: maxImageChecksPerHandle}
		return e
	}
	if c.running == nil {
		c.running = map[string]int{}
	}
	if c.running[handle] += n; c.running[handle] == 0 {
		delete(c.running, handle)
	}
	return nil
}

// validationLease is how long an image check may hold its idempotency key
// before a retry may take it for dead: longer than the engine's longest pull.
const validationLease = 15 * time.Minute

// runtimeFromInput validates in and returns the runtime it describes, every
// omitted field at its default.
func (s *Service) runtimeFromInput(handle, key string, in coderun.RuntimeInput) (coderun.Runtime, error) {
	var errs coderun.ValidationErrors
	if !coderun.RuntimeKeyPattern.MatchString(key) {
		errs.Add("runtimeKey", "invalid", "runtimeKey must match %s", coderun.RuntimeKeyPattern)
	}
	switch {
	case in.Image == "":
		errs.Add("image", "required", "image is required")
	case len(in.Image) > 512 || strings.IndexFunc(in.Image, notPrintable) >= 0:
		errs.Add("image", "invalid", "image must be an image reference of at most 512 printable characters")
	case !imageAllowed(s.opts.ImagePrefixes, handle, in.Image):
		errs.Add("image", "not_permitted", "this server runs images under %s only", strings.Join(s.opts.ImagePrefixes, ", "))
	}
	switch {
	case in.Digest == "":
		errs.Add("digest", "required", "digest is required")
	case !coderun.DigestPattern.MatchString(in.Digest):
		errs.Add("digest", "invalid", "digest must be sha256: followed by 64 lowercase hex digits")
	}
	rt := coderun.Runtime{
		Handle:         handle,
		Key:            key,
		Image:          in.Image,
		Digest:         in.Digest,
		Command:        in.Command,
		EntrypointFile: defaultEntrypointFile,
		Limits:         coderun.DefaultLimits,
	}
	if rt.Command == nil {
		rt.Command = []string{}
	}
	if len(rt.Command) > 64 {
		errs.Add("command", "too_long", "command may have at most 64 arguments")
	}
	for i, arg := range rt.Command {
		if arg == "" || len(arg) > 4096 || strings.ContainsRune(arg, 0) {
			errs.Add("command", "invalid", "command[%d] must be 1 to 4096 bytes without NUL", i)
		}
	}
	if in.EntrypointFile != nil {
		rt.EntrypointFile = *in.EntrypointFile
		if !validWorkspacePath(rt.EntrypointFile) {
			errs.Add("entrypointFile", "invalid", "entrypointFile must be a relative path inside the workspace, without '..'")
		}
	}
	if in.Network != nil {
		rt.Network = *in.Network
		if rt.Network && !s.opts.AllowNetwork {
			errs.Add("network", "not_permitted", "this server does not give runs a network")
		}
	}
	if in.Description != nil {
		rt.Description = *in.Description
		if len(rt.Description) > 1000 {
			errs.Add("description", "too_long", "description may be at most 1000 bytes")
		}
	}
	if in.Limits != nil {
		rt.Limits = s.limitsFromInput(*in.Limits, &errs)
	}
	return rt, errs.Err()
}

func (s *Service) limitsFromInput(in coderun.LimitsInput, errs *coderun.ValidationErrors) coderun.Limits {
	l := coderun.DefaultLimits
	lo, hi := coderun.MinLimits, s.opts.MaxLimits
	if in.TimeoutSeconds != nil {
		l.TimeoutSeconds = *in.TimeoutSeconds
		checkRange(errs, "limits.timeoutSeconds", l.TimeoutSeconds, lo.TimeoutSeconds, hi.TimeoutSeconds)
	}
	if in.MemoryMiB != nil {
		l.MemoryMiB = *in.MemoryMiB
		checkRange(errs, "limits.memoryMiB", l.MemoryMiB, lo.MemoryMiB, hi.MemoryMiB)
	}
	if in.CPUs != nil {
		l.CPUs = *in.CPUs
		checkRange(errs, "limits.cpus", l.CPUs, lo.CPUs, hi.CPUs)
	}
	if in.Pids != nil {
		l.Pids = *in.Pids
		checkRange(errs, "limits.pids", l.Pids, lo.Pids, hi.Pids)
	}
	if in.OutputBytes != nil {
		l.OutputBytes = *in.OutputBytes
		checkRange(errs, "limits.outputBytes", l.OutputBytes, lo.OutputBytes, hi.OutputBytes)
	}
	return l
}

func checkRange[T int | int64 | float64](errs *coderun.ValidationErrors, field string, v, lo, hi T) {
	if v < lo || v > hi {
		errs.Add(field, "out_of_range", "%s must be between %v and %v", field, lo, hi)
	}
}

// validWorkspacePath reports whether p names a file inside the workspace.
func validWorkspacePath(p string) bool {
	return p != "" && len(p) <= 255 && !strings.HasPrefix(p, "/") &&
		path.Clean(p) == p && p != "." && !strings.HasPrefix(p, "../") && p != ".." &&
		strings.IndexFunc(p, notPrintable) < 0
}

func notPrintable(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }

func pageSize(limit int) (int, error) {
	if limit == 0 {
		return defaultPageSize, nil
	}
	if limit < 1 || limit > maxPageSize {
		var errs coderun.ValidationErrors
		errs.Add("limit", "out_of_range", "limit must be between 1 and %d", maxPageSize)
		return 0, errs.Err()
	}
	return limit, nil
}

// pageOf makes a page of items, which were read with limit+1 rows: an extra
// row means there is a next page, which continues after the last item kept.
// key names an item in its cursor.
func pageOf[T any](items []T, limit int, key func(T) string) coderun.Page[T] {
	more := len(items) > limit
	if more {
		items = items[:limit]
	}
	page := coderun.Page[T]{Items: items, Cursors: make([]string, len(items))}
	for i, it := range items {
		page.Cursors[i] = encodeCursor(key(it))
	}
	if more {
		page.NextCursor = page.Cursors[limit-1]
	}
	return page
}

// Cursors are opaque to callers; today they carry the last key of a page.
func encodeCursor(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		var errs coderun.ValidationErrors
		errs.Add("cursor", "invalid", "cursor is not one this API handed out")
		return "", errs.Err()
	}
	return string(b), nil
}
