// Package docker drives a Docker engine for coderun: it checks runtime images
// against their registry and the engine (image.go), and runs code in
// locked-down containers behind the executor interface (sandbox.go prepares a
// run's container, run.go runs it). It speaks to the engine
// through github.com/moby/moby/client, negotiating the API version, so an old
// engine (API 1.41 on Debian 12) and a current one both work.
package docker

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
)

// Default bounds on the engine's work for one image check.
const (
	DefaultRegistryTimeout = 30 * time.Second
	DefaultPullTimeout     = 10 * time.Minute
)

// DefaultTmpfsBytes is the size of a sandbox's /tmp unless WithTmpfsSize says.
const DefaultTmpfsBytes = 64 << 20

// Engine is one Docker engine, reached the way the docker CLI reaches it
// (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION).
type Engine struct {
	cli             *client.Client
	registryTimeout time.Duration
	pullTimeout     time.Duration
	ociRuntime      string // "" is the engine's default (runc)
	allowNetwork    bool   // a spec's Network is honoured only when set
	tmpfsBytes      int64
	instance        string // labels this deployment's sandboxes; "" for none
	initPath        string // the coderun-init binary (WithInit)

	initMu    sync.Mutex
	initReady string // the init's volume, once filled

	mu       sync.Mutex
	platform *platform // the engine's own OS/architecture, once known
}

// Option configures an Engine.
type Option func(*Engine)

// WithRegistryTimeout bounds each question the engine asks a registry on our
// behalf; a registry that does not answer in time is unreachable.
func WithRegistryTimeout(d time.Duration) Option {
	return func(e *Engine) { e.registryTimeout = d }
}

// WithPullTimeout bounds pulling an image's bytes after it has been checked.
func WithPullTimeout(d time.Duration) Option {
	return func(e *Engine) { e.pullTimeout = d }
}

// WithNetwork lets sandboxes whose spec asks for a network have one. Without
// it no sandbox gets a network, whatever its spec says: the server's policy
// holds even for runs queued before it changed, or by a process that thought
// otherwise.
func WithNetwork(allowed bool) Option {
	return func(e *Engine) { e.allowNetwork = allowed }
}

// WithRuntime runs sandboxes under the named OCI runtime the engine knows
// (e.g. "runsc" for gVisor) instead of the engine's default.
func WithRuntime(name string) Option {
	return func(e *Engine) { e.ociRuntime = name }
}

// WithTmpfsSize sets the size of each sandbox's in-memory /tmp, in bytes.
func WithTmpfsSize(bytes int64) Option {
	return func(e *Engine) { e.tmpfsBytes = bytes }
}

// WithInstance sets apart the sandboxes of one coderun installation (one
// database) from those of others sharing the engine: they are labelled
// coderun.instance=name, and Sandboxes lists only those, so one
// installation's orphan sweep never removes another's live runs. Processes
// of one installation share the name, so each finds what the others left.
// Without it an Engine gets a name of its own and sees only the sandboxes it
// made itself.
func WithInstance(name string) Option {
	return func(e *Engine) { e.instance = name }
}

// New returns an Engine configured from the environment. It does not contact
// the engine; Ping does.
func New(opts ...Option) (*Engine, error) {
	// client.New negotiates the API version on the first request unless
	// DOCKER_API_VERSION pins one.
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	e := &Engine{
		instance:        "engine-" + strings.ToLower(rand.Text()),
		cli:             cli,
		registryTimeout: DefaultRegistryTimeout,
		pullTimeout:     DefaultPullTimeout,
		tmpfsBytes:      DefaultTmpfsBytes,
	}
	for _, opt := range opts {
		opt(e)
	}
	return e, nil
}

// Ping checks that the engine answers, and settles the API version to speak.
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := e.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker engine at %s: %w", e.cli.DaemonHost(), err)
	}
	return nil
}

// Close removes this Engine's coderun-init volume (unless a sandbox still
// mounts it: the engine refuses then, and a later process removes it) and
// releases the connections to the engine.
func (e *Engine) Close() error {
	e.initMu.Lock()
	volume := e.initReady
	e.initReady = ""
	e.initMu.Unlock()
	if volume != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		e.cli.VolumeRemove(ctx, volume, client.VolumeRemoveOptions{})
		cancel()
	}
	return e.cli.Close()
}

// platform is an OS/architecture pair as registries and engines name them
// ("linux", "amd64").
type platform struct {
	OS, Arch string
}

func (p platform) String() string { return p.OS + "/" + p.Arch }

// enginePlatform returns the OS/architecture of the engine, asked once.
func (e *Engine) enginePlatform(ctx context.Context) (platform, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.platform != nil {
		return *e.platform, nil
	}
	v, err := e.cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return platform{}, fmt.Errorf("docker engine version: %w", err)
	}
	e.platform = &platform{OS: v.Os, Arch: v.Arch}
	return *e.platform, nil
}
