package resolvers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"runtime/debug"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gharart/coderun"
)

// presentError shapes every error a GraphQL response carries. Each gets
// extensions.code and extensions.requestId:
//   - a domain error (*coderun.Error with a public code) keeps its message and
//     snake_case code, plus `fields` for a validation failure, `retryAfter`
//     (seconds) and any details it carries;
//   - an error of the GraphQL layer (parse, validation, cost limits) keeps its
//     message and upper-case code; one gqlgen raised without a code before
//     executing anything (a body that is not JSON) is the request's fault and
//     gets invalid_request, as it would from REST;
//   - anything else is logged with the request id and shown only as
//     "internal error" with code "internal".
func presentError(log *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		requestID := coderun.RequestIDFromContext(ctx)
		gqlErr := graphql.DefaultErrorPresenter(ctx, err)
		if e := coderun.AsError(err); e != nil && coderun.IsPublicCode(e.Code) {
			ext := maps.Clone(e.Details)
			if ext == nil {
				ext = map[string]any{}
			}
			ext["code"], ext["requestId"] = e.Code, requestID
			if len(e.Fields) > 0 {
				ext["fields"] = e.Fields
			}
			if e.RetryAfter > 0 {
				ext["retryAfter"] = int(math.Ceil(e.RetryAfter.Seconds()))
			}
			return &gqlerror.Error{Message: e.Message, Path: gqlErr.Path, Locations: gqlErr.Locations, Extensions: ext}
		}
		if errors.Unwrap(gqlErr) == nil {
			// Raised by gqlgen itself rather than by a resolver.
			if _, ok := gqlErr.Extensions["code"]; ok {
				return withExtensions(gqlErr, map[string]any{"requestId": requestID})
			}
			if len(gqlErr.Path) == 0 {
				return withExtensions(gqlErr, map[string]any{"code": coderun.EInvalidRequest, "requestId": requestID})
			}
		}
		log.ErrorContext(ctx, "graphql request failed",
			"request_id", requestID, "path", gqlErr.Path.String(), "err", err)
		return internalError(requestID, gqlErr.Path, gqlErr.Locations)
	}
}

// recoverPanic turns a panic in a resolver into an internal error; the panic
// and its stack go to the log only.
func recoverPanic(log *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, v any) error {
		requestID := coderun.RequestIDFromContext(ctx)
		log.ErrorContext(ctx, "panic resolving graphql request",
			"request_id", requestID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		// The websocket transport sends this error as it is, without the
		// presenter, so it is complete here.
		return internalError(requestID, graphql.GetPath(ctx), nil)
	}
}

func internalError(requestID string, path ast.Path, locations []gqlerror.Location) *gqlerror.Error {
	return &gqlerror.Error{
		Message:    "internal error",
		Path:       path,
		Locations:  locations,
		Extensions: map[string]any{"code": coderun.EInternal, "requestId": requestID},
	}
}

// withExtensions returns a copy of err with ext added to its extensions;
// gqlgen may hand the same error value to several responses (cached parse
// errors), so it is never changed in place.
func withExtensions(err *gqlerror.Error, ext map[string]any) *gqlerror.Error {
	out := *err
	out.Extensions = maps.Clone(err.Extensions)
	if out.Extensions == nil {
		out.Extensions = map[string]any{}
	}
	maps.Copy(out.Extensions, ext)
	return &out
}
