package resolvers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	// AliasLimit bounds an operation's aliases (default DefaultAliasLimit).
	AliasLimit int
	// RootFieldLimit bounds the fields an operation selects at its top
	// (default DefaultRootFieldLimit).
	RootFieldLimit int
	// DirectiveLimit bounds an operation's directives (default DefaultDirectiveLimit).
	DirectiveLimit int
	// TokenLimit bounds the tokens of a query document; the parser stops at
	// the first one over (default DefaultTokenLimit).
	TokenLimit int
	// Charge, when set, charges the caller an operation's complexity and,
	// for a mutation, its writes (its mutation fields) before it runs; an
	// error refuses the operation with rate_limited.
	Charge func(ctx context.Context, cost, writes int) error
	// AllowedOrigins may open websockets from a browser ("https://app.example",
	// or "*"); empty allows only the server's own origin.
	AllowedOrigins []string
	// MaxConnectionsPerCaller bounds the websockets one caller holds open at
	// once: per user once authenticated, per client IP address until then
	// (default DefaultMaxConnectionsPerCaller).
	MaxConnectionsPerCaller int
	// MaxSubscriptionsPerConnection bounds the subscriptions one websocket
	// runs at once (default DefaultMaxSubscriptionsPerConnection).
	MaxSubscriptionsPerConnection int
	// KeepAlive is how often a websocket's peer is pinged; one from which
	// nothing arrives for two intervals is dropped (default DefaultKeepAlive).
	KeepAlive time.Duration
	// WriteTimeout bounds the write of one websocket message; a peer that
	// does not take it in time is dropped (default DefaultWriteTimeout).
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

// Defaults of the cost limits. A full page of 100 runtimes with every field
// costs about 2,900, and of 100 runs with every field but output (runtime and
// handle included) about 4,000; a connection nested in another's items does
// not fit, nor does the default page of output for each of a page of runs.
const (
	DefaultComplexityLimit = 5000
	DefaultDepthLimit      = 10
)

// Defaults of the shape limits: well above what the dashboard sends, well
// below what makes a flood. The standard introspection query is about 300
// tokens, a page of runs with every field about 150. The token limit also
// bounds validation, which runs before any limit here and takes time
// quadratic in how often one field repeats: 2,000 repeats of a field take
// 0.8 s of CPU, the 1,000 the limit lets through a quarter of that.
const (
	DefaultAliasLimit     = 20
	DefaultRootFieldLimit = 8
	DefaultDirectiveLimit = 50
	DefaultTokenLimit     = 1000
)

// Defaults of the websocket timing.
const (
	DefaultKeepAlive    = 15 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

const (
	wsReadLimit    = 64 << 10
	wsInitTimeout  = 10 * time.Second
	queryCacheSize = 1000
	// Close codes: graphql-transport-ws's own for a refused connection_init,
	// and one in the same spirit (HTTP 429) for a caller over its limit.
	wsCloseForbidden       = 4403
	wsCloseTooManyRequests = 4429
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
	if opts.AliasLimit <= 0 {
		opts.AliasLimit = DefaultAliasLimit
	}
	if opts.RootFieldLimit <= 0 {
		opts.RootFieldLimit = DefaultRootFieldLimit
	}
	if opts.DirectiveLimit <= 0 {
		opts.DirectiveLimit = DefaultDirectiveLimit
	}
	if opts.TokenLimit <= 0 {
		opts.TokenLimit = DefaultTokenLimit
	}
	if opts.MaxConnectionsPerCaller <= 0 {
		opts.MaxConnectionsPerCaller = DefaultMaxConnectionsPerCaller
	}
	if opts.MaxSubscriptionsPerConnection <= 0 {
		opts.MaxSubscriptionsPerConnection = DefaultMaxSubscriptionsPerConnection
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
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
	cfg.Complexity.Viewer.SupportReports = func(childComplexity int, first *int, _ *string) int {
		return connectionComplexity(childComplexity, first)
	}
	cfg.Complexity.CodeRun.Output = func(childComplexity int, _ *int, first *int) int {
		return outputComplexity(childComplexity, first)
	}

	origins := newOriginPolicy(opts.AllowedOrigins)
	readLimit := int64(wsReadLimit)
	srv := handler.New(graph.NewExecutableSchema(cfg))
	connections := newCallerConnections(opts.MaxConnectionsPerCaller)
	srv.AddTransport(transport.Websocket{
		Implementation: gorillaWebsocket{origins: origins, keepAlive: opts.KeepAlive, writeTimeout: opts.WriteTimeout},
		InitFunc:       authenticateConnection(opts.Authenticate, connections, opts.Logger),
		InitTimeout:    wsInitTimeout,
		// Messages that keep proxies and clients aware the connection lives:
		// "ka" in graphql-ws, ping (answered by pong) in graphql-transport-ws.
		// Dead peers are detected by the adapter, which drops a connection
		// silent for two intervals whichever the subprotocol; gqlgen's own
		// pong deadline is not used.
		KeepAlivePingInterval: opts.KeepAlive,
		PingPongInterval:      opts.KeepAlive,
		MissingPongOk:         true,
		PayloadReadLimit:      &readLimit,
	})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](queryCacheSize))
	srv.SetParserTokenLimit(opts.TokenLimit)
	if opts.Introspection {
		srv.Use(extension.Introspection{})
	} else {
		srv.SetValidationRulesFn(validationRulesWithoutIntrospection)
	}
	// The shape check runs first: it is linear, and it keeps the complexity
	// walk (exponential in nested fragment spreads) away from query bombs.
	srv.Use(shapeLimit{
		maxDepth:      opts.DepthLimit,
		maxFields:     opts.ComplexityLimit,
		maxAliases:    opts.AliasLimit,
		maxRootFields: opts.RootFieldLimit,
		maxDirectives: opts.DirectiveLimit,
	})
	srv.Use(complexityLimit{extension.FixedComplexityLimit(opts.ComplexityLimit)})
	if opts.Charge != nil {
		srv.Use(costCharge{charge: opts.Charge})
	}
	srv.Use(reverify{authenticate: opts.Authenticate})
	srv.Use(subscriptions{maxPerConnection: opts.MaxSubscriptionsPerConnection})
	srv.SetErrorPresenter(presentError(opts.Logger))
	srv.SetRecoverFunc(recoverPanic(opts.Logger))

	return refuseOtherMethods(refuseForeignOrigins(origins, limitConnections(connections, refuseBatches(srv))))
}

// refuseOtherMethods answers what is neither a POST nor a websocket upgrade
// with 405 and the methods that are served, as a GraphQL error.
func refuseOtherMethods(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost || r.Method == http.MethodGet && r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Allow", "GET, POST")
		refuseRequest(w, r, http.StatusMethodNotAllowed, coderun.EMethodNotAllowed,
			fmt.Sprintf("%s is not served here: POST an operation, or GET with a websocket upgrade for subscriptions", r.Method))
	})
}

// refuseBatches answers a POST whose body is a JSON array — a batch of
// operations, which would dodge every per-operation limit — with 400 and a
// clear reason. (gqlgen would refuse it too, but with a decoding error that
// echoes the body back.) The body is bounded by the HTTP edge; one over that
// bound is answered with 413.
func refuseBatches(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			refuseRequest(w, r, http.StatusRequestEntityTooLarge, coderun.EPayloadTooLarge,
				fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit))
			return
		case err != nil:
			refuseRequest(w, r, http.StatusBadRequest, coderun.EInvalidRequest, "could not read the request body")
			return
		}
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '[' {
			refuseRequest(w, r, http.StatusBadRequest, coderun.EInvalidRequest,
				"batched operations are not supported: send one operation per request")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// authenticateConnection verifies a websocket's connection_init: the
// Authorization value of its payload, or else the principal the upgrade
// request's own header produced. A connection with neither is closed with
// 4403 and the reason. An authenticated connection then counts against its
// user's limit instead of its address's; one over the limit is closed with
// 4429.
func authenticateConnection(authenticate func(context.Context, string) (*coderun.Principal, error), connections *callerConnections, log *slog.Logger) transport.WebsocketInitFunc {
	return func(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		p := coderun.PrincipalFromContext(ctx)
		if authorization := payload.Authorization(); authorization != "" {
			var err error
			p, err = authenticate(ctx, authorization)
			switch coderun.ErrorCode(err) {
			case coderun.EUnauthenticated:
				return refuse(ctx, wsCloseForbidden, err)
			case coderun.ERateLimited:
				return refuse(ctx, wsCloseTooManyRequests, err)
			}
			if err != nil {
				// The token could not be checked: not the caller's fault, and
				// not something to describe to them.
				log.ErrorContext(ctx, "authenticating websocket connection failed",
					"request_id", coderun.RequestIDFromContext(ctx), "err", err)
				return refuse(ctx, wsCloseForbidden, coderun.Errorf(coderun.EUnavailable, "could not verify the token; try again later"))
			}
			ctx = coderun.NewContextWithPrincipal(ctx, p)
			if ws := websocketOf(ctx); ws != nil {
				ws.authorization = authorization
			}
		}
		if p == nil {
			return refuse(ctx, wsCloseForbidden, coderun.Errorf(coderun.EUnauthenticated,
				"missing bearer token: send {\"Authorization\": \"Bearer …\"} in connection_init"))
		}
		release, ok := connections.acquire(userCaller(p.UserID))
		if !ok {
			return refuse(ctx, wsCloseTooManyRequests, fmt.Errorf("%s: a user holds at most %d websocket connections at once",
				codeConnectionLimit, connections.max))
		}
		// The request's context ends when the connection's handler returns.
		context.AfterFunc(ctx, release)
		if ws := websocketOf(ctx); ws != nil {
			ws.releaseAddress()
		}
		return ctx, nil, nil
	}
}

// refuse ends a connection_init: graphql-ws clients get err in a
// connection_error message, graphql-transport-ws clients in the close reason.
func refuse(ctx context.Context, closeCode int, err error) (context.Context, *transport.InitPayload, error) {
	ctx = transport.WithWebsocketCloseCode(ctx, closeCode)
	ctx = transport.AppendCloseReason(ctx, err.Error())
	return ctx, nil, err
}

// limitConnections counts a websocket against its client's address until it
// authenticates, and answers an upgrade over the address's limit with 429.
func limitConnections(connections *callerConnections, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			next.ServeHTTP(w, r)
			return
		}
		release, ok := connections.acquire(addressCaller(r))
		if !ok {
			refuseRequest(w, r, http.StatusTooManyRequests, codeConnectionLimit,
				fmt.Sprintf("at most %d websocket connections may wait to authenticate from one address", connections.max))
			return
		}
		defer release()
		ws := &websocketState{releaseAddress: release, authorization: r.Header.Get("Authorization")}
		next.ServeHTTP(w, r.WithContext(withWebsocket(r.Context(), ws)))
	})
}

// refuseForeignOrigins answers a websocket upgrade from an origin the policy
// does not allow with 403 before gqlgen sees it (gqlgen would answer any
// failed upgrade with a 400).
func refuseForeignOrigins(origins originPolicy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" && !origins.allows(r) {
			refuseRequest(w, r, http.StatusForbidden, coderun.EForbidden,
				fmt.Sprintf("origin %q may not open a websocket here", r.Header.Get("Origin")))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseRequest answers r with a GraphQL response holding one error.
func refuseRequest(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	transport.SendError(w, status, &gqlerror.Error{
		Message: message,
		Extensions: map[string]any{
			"code":      code,
			"requestId": coderun.RequestIDFromContext(r.Context()),
		},
	})
}
