// Package resolvers implements coderun's GraphQL API: the resolvers of the
// schema in schema/ (thin: each calls service/ and maps the result), and the
// HTTP handler that serves it over POST and websockets with authentication,
// cost limits and the error presenter.
package resolvers

// gqlgen finds ../gqlgen.yml by walking up and runs from its directory.
//go:generate go tool gqlgen generate

import (
	"context"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/graph"
	"github.com/gharart/coderun/service"
)

// Resolver is the root of the resolver tree; every resolver reaches the service
// through it.
type Resolver struct {
	svc *service.Service
}

// handle is the handle an object links to (CodeRuntime.handle, CodeRun.handle).
func (r *Resolver) handle(ctx context.Context, name string) (*coderun.Handle, error) {
	h, err := r.svc.Handle(ctx, name)
	if err != nil {
		return nil, err
	}
	return &h, nil
}

// orNull answers a lookup whose object may be missing: the service's notFound
// error becomes a null field (the schema's way of saying "none, or not yours"),
// any other error stays an error.
func orNull[T any](v *T, err error, notFound string) (*T, error) {
	switch coderun.ErrorCode(err) {
	case "":
		return v, nil
	case notFound:
		return nil, nil
	}
	return nil, err
}

// nodeOrNull is orNull for Query.node, where either the handle or the object
// in it may be the one missing.
func nodeOrNull(n graph.Node, err error) (graph.Node, error) {
	switch coderun.ErrorCode(err) {
	case "":
		return n, nil
	case coderun.EHandleNotFound, coderun.ERuntimeNotFound, coderun.ERunNotFound:
		return nil, nil
	}
	return nil, err
}

func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}
