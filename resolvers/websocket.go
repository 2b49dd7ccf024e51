package resolvers

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/gorilla/websocket"
)

// wsWriteTimeout bounds the write of one message: a peer that stops reading
// is dropped instead of holding the connection's writer.
const wsWriteTimeout = 10 * time.Second

// gorillaWebsocket plugs github.com/gorilla/websocket into gqlgen's websocket
// transport (gqlgen ships only a coder/websocket adapter).
type gorillaWebsocket struct {
	origins originPolicy
}

var _ transport.WebsocketImplementation = gorillaWebsocket{}

func (g gorillaWebsocket) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	upgrader := websocket.Upgrader{
		Subprotocols: opts.Subprotocols,
		CheckOrigin:  g.origins.allows,
		// gqlgen answers a failed upgrade itself; writing here too would
		// send two responses.
		Error: func(http.ResponseWriter, *http.Request, int, error) {},
	}
	conn, err := upgrader.Upgrade(w, r, opts.ResponseHeader)
	if err != nil {
		return nil, err
	}
	return gorillaConn{conn}, nil
}

// gorillaConn is one accepted connection. gqlgen serialises its writes and
// reads from one goroutine, which is all gorilla asks of its callers.
type gorillaConn struct {
	*websocket.Conn
}

var (
	_ transport.WebsocketConn          = gorillaConn{}
	_ transport.WebsocketReadLimiter   = gorillaConn{}
	_ transport.WebsocketReadDeadliner = gorillaConn{}
)

// NextReader reports a normal close by the peer as transport.ErrWebsocketClosed,
// which gqlgen treats as the end of the connection rather than a failure.
func (c gorillaConn) NextReader() (int, io.Reader, error) {
	typ, r, err := c.Conn.NextReader()
	if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived) {
		return typ, nil, transport.ErrWebsocketClosed
	}
	return typ, r, err
}

func (c gorillaConn) WriteJSON(v any) error {
	if err := c.SetWriteDeadline(time.Now().Add(wsWriteTimeout)); err != nil {
		return err
	}
	return c.Conn.WriteJSON(v)
}

// maxCloseReason is the most a close frame's reason may hold (RFC 6455 5.5).
const maxCloseReason = 123

func (c gorillaConn) WriteClose(code int, reason string) error {
	if len(reason) > maxCloseReason {
		reason = strings.ToValidUTF8(reason[:maxCloseReason], "")
	}
	err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(wsWriteTimeout))
	if errors.Is(err, websocket.ErrCloseSent) {
		return nil
	}
	return err
}

// originPolicy decides which browser origins may open a websocket: those
// listed, or (when none are) only the server's own. Requests without an Origin
// header come from non-browser clients, which cannot be driven by another
// site, and are allowed.
type originPolicy struct {
	allowed []string // lower-case "scheme://host[:port]"; "*" allows any
}

func newOriginPolicy(allowed []string) originPolicy {
	p := originPolicy{}
	for _, o := range allowed {
		p.allowed = append(p.allowed, strings.ToLower(strings.TrimSuffix(o, "/")))
	}
	return p
}

func (p originPolicy) allows(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(p.allowed) > 0 {
		return slices.Contains(p.allowed, "*") || slices.Contains(p.allowed, strings.ToLower(origin))
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}
