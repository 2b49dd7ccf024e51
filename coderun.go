// Package coderun is the domain of the code-runtime service: handles and their
// members, code runtimes pinned by digest, principals with scopes and roles, and
// the error vocabulary shared by every transport. It imports nothing of ours;
// every other package speaks in these types.
package coderun

import (
	"context"
	"sync"
)

// Version is set at build time with -ldflags "-X github.com/gharart/coderun.Version=…".
var Version = "dev"

type ctxKey int

const (
	principalKey ctxKey = iota
	requestIDKey
	traceKey
)

// NewContextWithPrincipal returns ctx carrying the authenticated caller.
func NewContextWithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey, p)
}

// PrincipalFromContext returns the authenticated caller, or nil.
func PrincipalFromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey).(*Principal)
	return p
}

// NewContextWithRequestID returns ctx carrying the id of the request being served.
func NewContextWithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// RequestIDFromContext returns the id of the request being served, or "".
func RequestIDFromContext(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// RequestTrace collects what serving a request learns about it beyond its
// route, for the access log and the request log: the handle a GraphQL
// operation acted on, say. It is safe for concurrent use (GraphQL resolves
// fields at once).
type RequestTrace struct {
	mu     sync.Mutex
	handle string
}

// NewContextWithTrace returns ctx carrying t.
func NewContextWithTrace(ctx context.Context, t *RequestTrace) context.Context {
	return context.WithValue(ctx, traceKey, t)
}

// NoteHandle records that the request being served acted on handle; the first
// handle noted is the one kept. Without a trace in ctx it does nothing.
func NoteHandle(ctx context.Context, handle string) {
	t, _ := ctx.Value(traceKey).(*RequestTrace)
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.handle == "" {
		t.handle = handle
	}
}

// Handle is the first handle noted, or "".
func (t *RequestTrace) Handle() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.handle
}
