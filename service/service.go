// Package service holds coderun's use cases: handles and tokens, code runtimes
// (put, validate), and the access checks every one of them starts with. The
// transports (rest/, resolvers/) call only this package; it reads and writes
// through store/ and never imports net/http.
package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/store"
)

// ImageChecker resolves an image reference against the registry (or the local
// engine for a local-only image) and makes image@digest available to runs.
// resolved is the digest found ("" when none could be); fail is nil when the
// declared digest was found and pulled, else why not; err is an infrastructure
// failure (the engine itself unreachable), not a verdict on the image.
type ImageChecker interface {
	CheckImage(ctx context.Context, image, digest string) (resolved string, fail *coderun.ErrorDetail, err error)
}

// ImageReleaser lets go of the images an installation pulled that keep does
// not want, removing those nothing else on the engine needs; it returns the
// digests let go of.
type ImageReleaser interface {
	ReleaseImages(ctx context.Context, keep func(digest string) bool) ([]string, error)
}

// Options configure a Service.
type Options struct {
	Images ImageChecker
	// ReleaseImages has Housekeep release the images validation pulled that
	// no runtime and no unfinished run names any more, when Images is an
	// ImageReleaser.
	ReleaseImages bool
	// MaxLimits lowers the contract's maxima for runtimes on this server.
	MaxLimits coderun.Limits
	// AllowNetwork lets runtimes ask for a network (off by default).
	AllowNetwork bool
	// ImagePrefixes, when set, are the repositories runtimes may use (see
	// imageAllowed); "{handle}" stands for the runtime's handle.
	ImagePrefixes []string
	// Runs, when set, hears of queued runs and cancel requests at once.
	Runs RunNotifier
	// Events streams runs to their followers (FollowRunStatus,
	// FollowRunOutput); without it following a run is unavailable.
	Events *events.Hub
	// Publish hears of every run change the service commits (a submission, a
	// cancel of a queued run); by default Events. With PostgreSQL it is an
	// events.Notifier, so that other processes hear too.
	Publish events.RunPublisher
	Logger  *slog.Logger
	Now     func() time.Time
}

// Service is the one core the REST and GraphQL transports share.
type Service struct {
	db     *store.DB
	images ImageChecker
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	// requests is the request log, which support reports cite.
	requests requestLog
	// checks counts the image checks in progress.
	checks imageChecks
}

// New returns a Service over db.
func New(db *store.DB, opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Publish == nil && opts.Events != nil {
		opts.Publish = opts.Events
	}
	if opts.MaxLimits == (coderun.Limits{}) {
		opts.MaxLimits = coderun.MaxLimits
	}
	s := &Service{db: db, images: opts.Images, opts: opts, log: opts.Logger, now: func() time.Time { return opts.Now().UTC().Truncate(time.Microsecond) }}
	s.requests = requestLog{db: db, svc: s}
	return s
}

// newID returns a new id with prefix: a ULID, so that ids sort by creation.
func newID(prefix string) string { return prefix + ulid.Make().String() }
