// Package coderun is the domain of the code-runtime service: handles and their
// members, code runtimes pinned by digest, principals with scopes and roles, and
// the error vocabulary shared by every transport. It imports nothing of ours;
// every other package speaks in these types.
package coderun

import "context"

// Version is set at build time with -ldflags "-X github.com/gharart/coderun.Version=…".
var Version = "dev"

type ctxKey int

const (
	principalKey ctxKey = iota
	requestIDKey
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
