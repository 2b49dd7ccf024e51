package resolvers

import (
	"context"
	"fmt"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/service"
)

// codeSubscriptionLimit refuses a subscription over a connection's limit. It
// is an error of the GraphQL layer, so it is upper-case like gqlgen's own.
const codeSubscriptionLimit = "SUBSCRIPTION_LIMIT_EXCEEDED"

// relay hands a service stream to gqlgen as the channel a subscription
// resolver returns, converting each value on the way. A value is taken from
// the stream only once gqlgen has taken the one before, so the stream's
// bounded buffer is what absorbs a slow client. When the stream ends with an
// error, ended turns it into the error the client is told, which is kept
// for the subscriptions extension to deliver after the last value: gqlgen
// offers a resolver no other way to fail once it has returned its channel.
func relay[T, U any](ctx context.Context, s *service.Stream[T], convert func(T) U, ended func(error) error) <-chan U {
	end := streamEndOf(ctx)
	path := graphql.GetFieldContext(ctx).Path()
	out := make(chan U)
	go func() {
		defer close(out)
		for v := range s.C {
			select {
			case out <- convert(v):
			case <-ctx.Done():
				return // the client left; the service ends its stream with ctx
			}
		}
		// A stream that ended because the client left has nobody to tell.
		if err := s.Err(); err != nil && end != nil && ctx.Err() == nil {
			end.set(gqlerror.WrapPath(path, ended(err)))
		}
	}()
	return out
}

// tooSlowForOutput is the error that ends an output subscription whose client
// fell behind: it names the last seq the client was given, from which a new
// subscription continues without a gap.
func tooSlowForOutput(lastSeq int64) error {
	return &coderun.Error{
		Code: coderun.ESubscriberTooSlow,
		Message: fmt.Sprintf("the subscriber fell behind the run's output; subscribe again with afterSeq: %d to continue after the last chunk received",
			lastSeq),
		Details: map[string]any{"resumeAfterSeq": lastSeq},
	}
}

// tooSlowForStatus is the error that ends a status subscription whose client
// fell behind; subscribing again starts from the status the run is in then.
func tooSlowForStatus() error {
	return coderun.Errorf(coderun.ESubscriberTooSlow,
		"the subscriber fell behind the run's status changes; subscribe again to continue from the current status")
}

// streamEnd carries the error a subscription's stream ended with from its
// resolver to the subscriptions extension.
type streamEnd struct {
	mu  sync.Mutex
	err error
	// release gives the subscription's place on its connection back, once.
	release func()
}

func (e *streamEnd) set(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
}

// take returns the error once; the response after it ends the subscription.
func (e *streamEnd) take() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.err
	e.err = nil
	return err
}

type streamEndKey struct{}

func streamEndOf(ctx context.Context) *streamEnd {
	e, _ := ctx.Value(streamEndKey{}).(*streamEnd)
	return e
}

// subscriptions is the gqlgen extension that runs subscription operations:
// it bounds how many one websocket holds at once, and it delivers the error a
// subscription's stream ended with as a last response — data null, the error
// shaped by the error presenter like any other — after which the transport
// completes the operation. That is a "next" (graphql-transport-ws) or "data"
// (graphql-ws) message followed by "complete" in both subprotocols, the
// same as when a subscription fails before its first value.
type subscriptions struct {
	maxPerConnection int
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationInterceptor
	graphql.ResponseInterceptor
} = subscriptions{}

func (subscriptions) ExtensionName() string { return "Subscriptions" }

func (subscriptions) Validate(graphql.ExecutableSchema) error { return nil }

func (s subscriptions) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if graphql.GetOperationContext(ctx).Operation.Operation != ast.Subscription {
		return next(ctx)
	}
	end := &streamEnd{release: func() {}}
	if conn := websocketOf(ctx); conn != nil {
		if !conn.startSubscription(s.maxPerConnection) {
			// gqlgen asks for OneShot here: a handler that never ends would
			// loop on the error.
			return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{
				Message: fmt.Sprintf("a connection holds at most %d subscriptions at once; complete one or open another connection", s.maxPerConnection),
				Extensions: map[string]any{
					"code":      codeSubscriptionLimit,
					"requestId": coderun.RequestIDFromContext(ctx),
				},
			}}})
		}
		// The place is given back when the stream ends, before the transport
		// tells the client the operation is complete, and, however else the
		// operation ends, when the transport cancels its context.
		end.release = sync.OnceFunc(conn.endSubscription)
		context.AfterFunc(ctx, end.release)
	}
	return next(context.WithValue(ctx, streamEndKey{}, end))
}

func (subscriptions) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp != nil {
		return resp
	}
	end := streamEndOf(ctx)
	if end == nil {
		return nil
	}
	if err := end.take(); err != nil {
		graphql.AddError(ctx, err)
		return &graphql.Response{Errors: graphql.GetErrors(ctx)}
	}
	end.release()
	return nil
}
