package resolvers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/graph"
	"github.com/gharart/coderun/service"
)

// Options configure the GraphQL handler.
type Options struct {
	// Authenticate (required) verifies the Authorization value a websocket
	// client sends in its connection_init payload. POST requests are
	// authenticated before they reach the handler, which reads the principal
	// from the request context.
	Authenticate func(ctx context.Context, authorization string) (*coderun.Principal, error)
	// Introspection serves __schema and __type (on in development).
	Introspection bool
	// ComplexityLimit bounds an operation's cost (default DefaultComplexityLimit).
	ComplexityLimit int
	// DepthLimit bounds how deep an operation's fields nest (default DefaultDepthLimit).
	DepthLimit int
	// AllowedOrigins may open websockets from a browser ("https://app.example",
	// or "*"); empty allows only the server's own origin.
	AllowedOrigins []string
	Logger         *slog.Logger
}

// Defaults of the cost limits. A full page of 100 runtimes with every field
// costs about 2,900, and of 100 runs with every field but output (runtime and
// handle included) about 4,000; a connection nested in another's items does
// not fit, nor does the default page of output for each of a page of runs.
const (
	DefaultComplexityLimit = 5000
	DefaultDepthLimit      = 10
)

const (
	wsReadLimit      = 64 << 10
	wsInitTimeout    = 10 * time.Second
	wsKeepAlive      = 15 * time.Second // graphql-ws keep-alive messages
	wsPingInterval   = 30 * time.Second // graphql-transport-ws pings; a peer silent for two is dropped
	queryCacheSize   = 1000
	wsCloseForbidden = 4403 // graphql-transport-ws: connection_init refused
)

// NewHandler returns the GraphQL endpoint: POST queries and mutations, and
// websockets speaking graphql-transport-ws or graphql-ws.
func NewHandler(svc *service.Service, opts Options) http.Handler {
	if opts.ComplexityLimit <= 0 {
		opts.ComplexityLimit = DefaultComplexityLimit
	}
	if opts.DepthLimit <= 0 {
		opts.DepthLimit = DefaultDepthLimit
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}

	cfg := graph.Config{Resolvers: &Resolver{svc: svc}}
	cfg.Complexity.Handle.Runtimes = func(childComplexity int, first *int, _ *string) int {
		return connectionComplexity(childComplexity, first)
	}
	cfg.Complexity.Handle.Runs = func(childComplexity int, first *int, _ *string, _ []coderun.RunStatus) int {
		return connectionComplexity(childComplexity, first)
	}
	cfg.Complexity.CodeRun.Output = func(childComplexity int, _ *int, first *int) int {
		return outputComplexity(childComplexity, first)
	}

	origins := newOriginPolicy(opts.AllowedOrigins)
	readLimit := int64(wsReadLimit)
	srv := handler.New(graph.NewExecutableSchema(cfg))
	srv.AddTransport(transport.Websocket{
		Implementation:        gorillaWebsocket{origins: origins},
		InitFunc:              authenticateConnection(opts.Authenticate, opts.Logger),
		InitTimeout:           wsInitTimeout,
		KeepAlivePingInterval: wsKeepAlive,
		PingPongInterval:      wsPingInterval,
		PayloadReadLimit:      &readLimit,
	})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](queryCacheSize))
	if opts.Introspection {
		srv.Use(extension.Introspection{})
	} else {
		srv.SetValidationRulesFn(validationRulesWithoutIntrospection)
	}
	// The shape check runs first: it is linear, and it keeps the complexity
	// walk (exponential in nested fragment spreads) away from query bombs.
	srv.Use(shapeLimit{maxDepth: opts.DepthLimit, maxFields: opts.ComplexityLimit})
	srv.Use(extension.FixedComplexityLimit(opts.ComplexityLimit))
	srv.SetErrorPresenter(presentError(opts.Logger))
	srv.SetRecoverFunc(recoverPanic(opts.Logger))

	return refuseForeignOrigins(origins, srv)
}

// authenticateConnection verifies a websocket's connection_init: the
// Authorization value of its payload, or else the principal the upgrade
// request's own header produced. A connection with neither is closed with
// 4403 and the reason.
func authenticateConnection(authenticate func(context.Context, string) (*coderun.Principal, error), log *slog.Logger) transport.WebsocketInitFunc {
	return func(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		if authorization := payload.Authorization(); authorization != "" {
			p, err := authenticate(ctx, authorization)
			if coderun.ErrorCode(err) == coderun.EUnauthenticated {
				return refuse(ctx, err)
			}
			if err != nil {
				// The token could not be checked: not the caller's fault, and
				// not something to describe to them.
				log.ErrorContext(ctx, "authenticating websocket connection failed",
					"request_id", coderun.RequestIDFromContext(ctx), "err", err)
				return refuse(ctx, coderun.Errorf(coderun.EUnavailable, "could not verify the token; try again later"))
			}
			return coderun.NewContextWithPrincipal(ctx, p), nil, nil
		}
		if coderun.PrincipalFromContext(ctx) != nil {
			return ctx, nil, nil
		}
		return refuse(ctx, coderun.Errorf(coderun.EUnauthenticated,
			"missing bearer token: send {\"Authorization\": \"Bearer …\"} in connection_init"))
	}
}

// refuse ends a connection_init: graphql-ws clients get err in a
// connection_error message, graphql-transport-ws clients in the close reason.
func refuse(ctx context.Context, err error) (context.Context, *transport.InitPayload, error) {
	ctx = transport.WithWebsocketCloseCode(ctx, wsCloseForbidden)
	ctx = transport.AppendCloseReason(ctx, err.Error())
	return ctx, nil, err
}

// refuseForeignOrigins answers a websocket upgrade from an origin the policy
// does not allow with 403 before gqlgen sees it (gqlgen would answer any
// failed upgrade with a 400).
func refuseForeignOrigins(origins originPolicy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" && !origins.allows(r) {
			w.Header().Set("Content-Type", "application/json")
			transport.SendError(w, http.StatusForbidden, &gqlerror.Error{
				Message: fmt.Sprintf("origin %q may not open a websocket here", r.Header.Get("Origin")),
				Extensions: map[string]any{
					"code":      coderun.EForbidden,
					"requestId": coderun.RequestIDFromContext(r.Context()),
				},
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}
