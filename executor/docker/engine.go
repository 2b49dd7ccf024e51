// Package docker drives a Docker engine for coderun: it checks runtime images
// against their registry and the engine (image.go), and will run code in
// locked-down containers behind the executor interface. It speaks to the engine
// through github.com/moby/moby/client, negotiating the API version, so an old
// engine (API 1.41 on Debian 12) and a current one both work.
package docker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/moby/moby/client"
)

// Default bounds on the engine's work for one image check.
const (
	DefaultRegistryTimeout = 30 * time.Second
	DefaultPullTimeout     = 10 * time.Minute
)

// Engine is one Docker engine, reached the way the docker CLI reaches it
// (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION).
type Engine struct {
	cli             *client.Client
	registryTimeout time.Duration
	pullTimeout     time.Duration

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

// New returns an Engine configured from the environment. It does not contact
// the engine; Ping does.
func New(opts ...Option) (*Engine, error) {
	// client.New negotiates the API version on the first request unless
	// DOCKER_API_VERSION pins one.
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	e := &Engine{cli: cli, registryTimeout: DefaultRegistryTimeout, pullTimeout: DefaultPullTimeout}
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

// Close releases the connections to the engine.
func (e *Engine) Close() error {
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
