package resolvers

import (
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gharart/coderun"
)

// codeConnectionLimit refuses a websocket over its caller's limit.
const codeConnectionLimit = "CONNECTION_LIMIT_EXCEEDED"

// Defaults of the websocket limits: room for a dashboard in a few tabs, each
// following a page of runs' status and output.
const (
	DefaultMaxConnectionsPerCaller       = 20
	DefaultMaxSubscriptionsPerConnection = 50
)

// callerConnections counts the websockets each caller holds open. A caller is
// a user once the connection is authenticated, and the client's IP address
// before that, so that sockets that never authenticate are bounded too.
type callerConnections struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

func newCallerConnections(max int) *callerConnections {
	return &callerConnections{max: max, open: map[string]int{}}
}

// acquire takes one of caller's connections, or reports that none is left.
// release gives it back; calling it more than once is harmless.
func (c *callerConnections) acquire(caller string) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[caller] >= c.max {
		return nil, false
	}
	c.open[caller]++
	return sync.OnceFunc(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.open[caller]--; c.open[caller] == 0 {
			delete(c.open, caller)
		}
	}), true
}

func userCaller(userID string) string { return "user:" + userID }

func addressCaller(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host
}

// websocketState is what one accepted websocket keeps for its whole life:
// the slot it holds in its caller's count until it authenticates, and how
// many subscriptions it runs.
type websocketState struct {
	// releaseAddress gives back the connection's slot among its IP
	// address's, once its user's slot holds it instead.
	releaseAddress func()
	// authorization is the credential the connection authenticated with
	// (connection_init's, else the upgrade request's header), verified
	// again for each operation.
	authorization string

	mu            sync.Mutex
	subscriptions int
}

type websocketKey struct{}

func withWebsocket(ctx context.Context, ws *websocketState) context.Context {
	return context.WithValue(ctx, websocketKey{}, ws)
}

// websocketOf returns the websocket an operation arrived on, or nil (POST).
func websocketOf(ctx context.Context) *websocketState {
	ws, _ := ctx.Value(websocketKey{}).(*websocketState)
	return ws
}

func (ws *websocketState) startSubscription(max int) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.subscriptions >= max {
		return false
	}
	ws.subscriptions++
	return true
}

func (ws *websocketState) endSubscription() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.subscriptions--
}

// reverify checks a websocket's credential again before each operation on it,
// so that a token revoked or expired since connection_init can start nothing
// more (what it already runs ends as it would). An operation over POST was
// authenticated with its own request.
type reverify struct {
	authenticate func(context.Context, string) (*coderun.Principal, error)
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationInterceptor
} = reverify{}

func (reverify) ExtensionName() string { return "Reverify" }

func (reverify) Validate(graphql.ExecutableSchema) error { return nil }

func (v reverify) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	ws := websocketOf(ctx)
	if ws == nil || ws.authorization == "" || v.authenticate == nil {
		return next(ctx)
	}
	p, err := v.authenticate(ctx, ws.authorization)
	if err != nil {
		code := coderun.ErrorCode(err)
		if !coderun.IsPublicCode(code) {
			code, err = coderun.EUnavailable, coderun.Errorf(coderun.EUnavailable, "could not verify the token; try again later")
		}
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{
			Message:    coderun.ErrorMessage(err) + "; open a new connection with a valid token",
			Extensions: map[string]any{"code": code, "requestId": coderun.RequestIDFromContext(ctx)},
		}}})
	}
	return next(coderun.NewContextWithPrincipal(ctx, p))
}
