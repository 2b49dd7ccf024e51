package resolvers

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/gorilla/websocket"
)

// gorillaWebsocket plugs github.com/gorilla/websocket into gqlgen's websocket
// transport (gqlgen ships only a coder/websocket adapter), and keeps each
// connection honest: a peer that stops taking messages or stops answering
// pings is dropped, whichever subprotocol it speaks.
type gorillaWebsocket struct {
	origins originPolicy
	// keepAlive is how often the peer is pinged; it is dropped when nothing
	// (a message or a pong) arrives from it for two intervals.
	keepAlive time.Duration
	// writeTimeout bounds the write of one message.
	writeTimeout time.Duration
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
	ws, err := upgrader.Upgrade(w, r, opts.ResponseHeader)
	if err != nil {
		return nil, err
	}
	c := &gorillaConn{ws: ws, silence: 2 * g.keepAlive, writeTimeout: g.writeTimeout, closed: make(chan struct{})}
	c.heard()
	ws.SetPongHandler(func(string) error { c.heard(); return nil })
	go c.ping(r.Context(), g.keepAlive)
	return c, nil
}

// gorillaConn is one accepted connection. gqlgen serialises its writes and
// reads from one goroutine, which is all gorilla asks of its callers; the
// pings are control frames, which gorilla lets any goroutine write.
//
// The connection's read deadline is its liveness: every message and pong
// from the peer pushes it on. It does not offer gqlgen its read deadline
// (transport.WebsocketReadDeadliner), because gqlgen clears it on every
// graphql-transport-ws pong, which would switch that off.
type gorillaConn struct {
	ws           *websocket.Conn
	silence      time.Duration
	writeTimeout time.Duration
	closeOnce    sync.Once
	closed       chan struct{}
}

var (
	_ transport.WebsocketConn        = (*gorillaConn)(nil)
	_ transport.WebsocketReadLimiter = (*gorillaConn)(nil)
)

// heard notes that the peer is alive.
func (c *gorillaConn) heard() {
	_ = c.ws.SetReadDeadline(time.Now().Add(c.silence))
}

// ping pings the peer every interval until the connection is closed. The
// connection ends with its request at the latest: gqlgen does not close
// every connection it gives up on (one whose connection_init payload is
// not a JSON object, for one).
func (c *gorillaConn) ping(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.writeTimeout)); err != nil {
				c.Close()
				return
			}
		case <-ctx.Done():
			c.Close()
			return
		case <-c.closed:
			return
		}
	}
}

func (c *gorillaConn) Subprotocol() string { return c.ws.Subprotocol() }

func (c *gorillaConn) SetReadLimit(limit int64) { c.ws.SetReadLimit(limit) }

// NextReader reports a normal close by the peer as transport.ErrWebsocketClosed,
// which gqlgen treats as the end of the connection rather than a failure.
func (c *gorillaConn) NextReader() (int, io.Reader, error) {
	typ, r, err := c.ws.NextReader()
	if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived) {
		return typ, nil, transport.ErrWebsocketClosed
	}
	if err == nil {
		c.heard()
	}
	return typ, r, err
}

// WriteJSON writes one message within the write timeout. A message that
// cannot be written closes the connection: gqlgen only reports write errors,
// and a subscription would go on producing for a peer that takes nothing.
// Closing ends gqlgen's read loop, and with it every operation.
func (c *gorillaConn) WriteJSON(v any) error {
	err := c.ws.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	if err == nil {
		err = c.ws.WriteJSON(v)
	}
	if err != nil {
		c.Close()
	}
	return err
}

// maxCloseReason is the most a close frame's reason may hold (RFC 6455 5.5).
const maxCloseReason = 123

func (c *gorillaConn) WriteClose(code int, reason string) error {
	if len(reason) > maxCloseReason {
		reason = strings.ToValidUTF8(reason[:maxCloseReason], "")
	}
	err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(c.writeTimeout))
	if errors.Is(err, websocket.ErrCloseSent) {
		return nil
	}
	return err
}

func (c *gorillaConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.ws.Close()
	})
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
