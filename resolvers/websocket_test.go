package resolvers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
)

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// dial opens a websocket to the test server speaking subprotocol.
func (e *env) dial(subprotocol string, header http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: []string{subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, res, err := d.Dial("ws"+strings.TrimPrefix(e.endpoint, "http"), header)
	if conn != nil {
		e.t.Cleanup(func() { conn.Close() })
	}
	return conn, res, err
}

func send(t *testing.T, conn *websocket.Conn, m wsMessage) {
	t.Helper()
	if err := conn.WriteJSON(m); err != nil {
		t.Fatal(err)
	}
}

// next reads the next message that is not a keep-alive.
func next(t *testing.T, conn *websocket.Conn) wsMessage {
	t.Helper()
	for {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m wsMessage
		if err := conn.ReadJSON(&m); err != nil {
			t.Fatalf("read: %v", err)
		}
		if m.Type != "ka" && m.Type != "ping" && m.Type != "pong" {
			return m
		}
	}
}

func expect(t *testing.T, conn *websocket.Conn, typ string) wsMessage {
	t.Helper()
	m := next(t, conn)
	if m.Type != typ {
		t.Fatalf("got %s message %s, want %s", m.Type, m.Payload, typ)
	}
	return m
}

// closeError reads until the server closes the connection and returns how.
func closeError(t *testing.T, conn *websocket.Conn) *websocket.CloseError {
	t.Helper()
	for {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := conn.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce
		}
		if err != nil {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}

func payload(t *testing.T, v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const handleQuery = `{ handle(handle: "acme") { handle limits { maxActiveRuns } } }`

func TestWebsocketGraphQLTransportWS(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	conn, res, err := e.dial("graphql-transport-ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if got := res.Header.Get("Sec-Websocket-Protocol"); got != "graphql-transport-ws" {
		t.Fatalf("negotiated subprotocol %q", got)
	}
	send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": e.jwt("alice")})})
	expect(t, conn, "connection_ack")

	send(t, conn, wsMessage{ID: "1", Type: "subscribe", Payload: payload(t, map[string]string{"query": handleQuery})})
	m := expect(t, conn, "next")
	if m.ID != "1" || string(m.Payload) != `{"data":{"handle":{"handle":"acme","limits":{"maxActiveRuns":4}}}}` {
		t.Fatalf("next = %s %s", m.ID, m.Payload)
	}
	if m := expect(t, conn, "complete"); m.ID != "1" {
		t.Fatalf("complete for %q", m.ID)
	}

	// Cost limits hold over the socket too: refused with an error message.
	deep := `{ handle(handle: "acme") { ...OfHandle } }` + strings.Replace(deepFragments, "LEAF", "limits { maxActiveRuns }", 1)
	send(t, conn, wsMessage{ID: "2", Type: "subscribe", Payload: payload(t, map[string]string{"query": deep})})
	m = expect(t, conn, "error")
	var errs []gqlError
	if err := json.Unmarshal(m.Payload, &errs); err != nil || len(errs) != 1 || errs[0].Extensions["code"] != "DEPTH_LIMIT_EXCEEDED" {
		t.Fatalf("error payload %s", m.Payload)
	}
	if id, _ := errs[0].Extensions["requestId"].(string); !strings.HasPrefix(id, "req_") {
		t.Errorf("error without the connection's request id: %s", m.Payload)
	}
	expect(t, conn, "complete") // gqlgen completes a refused operation too

	// A member-only answer is still member-only over the socket.
	send(t, conn, wsMessage{ID: "3", Type: "subscribe", Payload: payload(t, map[string]string{"query": `{ handle(handle: "globex") { handle } }`})})
	if m := expect(t, conn, "next"); string(m.Payload) != `{"data":{"handle":null}}` {
		t.Fatalf("alice reading globex: %s", m.Payload)
	}
}

func TestWebsocketLegacyGraphQLWS(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	conn, _, err := e.dial("graphql-ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": e.jwt("vera")})})
	expect(t, conn, "connection_ack")
	send(t, conn, wsMessage{ID: "1", Type: "start", Payload: payload(t, map[string]string{"query": handleQuery})})
	if m := expect(t, conn, "data"); !strings.Contains(string(m.Payload), `"handle":"acme"`) {
		t.Fatalf("data = %s", m.Payload)
	}
	expect(t, conn, "complete")
}

func TestWebsocketTakesThePrincipalOfTheUpgradeRequest(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	// The edge authenticated the upgrade request's own Authorization header.
	conn, _, err := e.dial("graphql-transport-ws", http.Header{"X-Test-User": {"alice"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	send(t, conn, wsMessage{Type: "connection_init"})
	expect(t, conn, "connection_ack")
	send(t, conn, wsMessage{ID: "1", Type: "subscribe", Payload: payload(t, map[string]string{"query": handleQuery})})
	if m := expect(t, conn, "next"); !strings.Contains(string(m.Payload), `"handle":"acme"`) {
		t.Fatalf("next = %s", m.Payload)
	}
}

func TestWebsocketRefusesBadOrMissingTokens(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	for name, tc := range map[string]struct {
		init   json.RawMessage
		reason string
	}{
		"no token":       {nil, "unauthenticated: missing bearer token"},
		"not a bearer":   {payload(t, map[string]string{"Authorization": "Basic YWxpY2U6"}), "unauthenticated: malformed Authorization header"},
		"forged token":   {payload(t, map[string]string{"Authorization": e.jwt("alice") + "x"}), "unauthenticated:"},
		"wrong key type": {payload(t, map[string]any{"Authorization": 42}), "unauthenticated: missing bearer token"},
	} {
		t.Run(name, func(t *testing.T) {
			conn, _, err := e.dial("graphql-transport-ws", nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			send(t, conn, wsMessage{Type: "connection_init", Payload: tc.init})
			ce := closeError(t, conn)
			if ce.Code != 4403 || !strings.HasPrefix(ce.Text, tc.reason) {
				t.Fatalf("closed with %d %q, want 4403 %q…", ce.Code, ce.Text, tc.reason)
			}
		})
	}

	// graphql-ws clients are told in a connection_error message first.
	conn, _, err := e.dial("graphql-ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": "Bearer nope"})})
	if m := expect(t, conn, "connection_error"); !strings.Contains(string(m.Payload), "unauthenticated") {
		t.Fatalf("connection_error = %s", m.Payload)
	}
}

func TestWebsocketOriginCheck(t *testing.T) {
	refused := func(t *testing.T, e *env, origin string) {
		t.Helper()
		conn, res, err := e.dial("graphql-transport-ws", http.Header{"Origin": {origin}})
		if err == nil {
			conn.Close()
			t.Fatalf("origin %s was let in", origin)
		}
		if res == nil || res.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %s: %v, response %+v; want 403", origin, err, res)
		}
		body, _ := io.ReadAll(res.Body)
		if !strings.Contains(string(body), `"code":"forbidden"`) || !strings.Contains(string(body), `"requestId":"req_`) {
			t.Errorf("refusal body %s", body)
		}
	}
	accepted := func(t *testing.T, e *env, origin string) {
		t.Helper()
		conn, _, err := e.dial("graphql-transport-ws", http.Header{"Origin": {origin}})
		if err != nil {
			t.Fatalf("origin %s refused: %v", origin, err)
		}
		conn.Close()
	}

	t.Run("same origin only by default", func(t *testing.T) {
		e := newEnv(t, resolvers.Options{})
		accepted(t, e, e.srv.URL)
		refused(t, e, "http://evil.example")
	})
	t.Run("listed origins", func(t *testing.T) {
		e := newEnv(t, resolvers.Options{AllowedOrigins: []string{"https://app.example"}})
		accepted(t, e, "https://APP.example")
		refused(t, e, e.srv.URL)
		refused(t, e, "https://app.example.evil")
	})
}

func TestWebsocketMessagesAreLimitedTo64KiB(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	conn, _, err := e.dial("graphql-transport-ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": e.jwt("alice")})})
	expect(t, conn, "connection_ack")

	query := `{ handle(handle: "acme") { handle } }` + strings.Repeat(" ", 64<<10)
	send(t, conn, wsMessage{ID: "1", Type: "subscribe", Payload: payload(t, map[string]string{"query": query})})
	if ce := closeError(t, conn); ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("closed with %d %q, want %d", ce.Code, ce.Text, websocket.CloseMessageTooBig)
	}
}

// Tokens sent in connection_init are throttled per client address like the
// Authorization header: after too many failures, even a good token is
// refused (4429) until the address may try again.
func TestWebsocketTokenGuessesAreThrottled(t *testing.T) {
	e := edgeEnv(t, rest.DefaultThrottles.GraphQL, 0)
	init := func(token string) *websocket.CloseError {
		conn, _, err := e.dial("graphql-transport-ws", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": token})})
		if token == e.jwt("alice") {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			var m wsMessage
			if err := conn.ReadJSON(&m); err == nil && m.Type == "connection_ack" {
				return nil
			}
		}
		return closeError(t, conn)
	}
	for i := range rest.DefaultThrottles.AuthFailure.Burst {
		if ce := init(fmt.Sprint("Bearer guess-", i)); ce == nil || ce.Code != 4403 {
			t.Fatalf("guess %d: %v, want 4403", i, ce)
		}
	}
	if ce := init(e.jwt("alice")); ce == nil || ce.Code != 4429 || !strings.HasPrefix(ce.Text, "rate_limited") {
		t.Fatalf("a good token after %d guesses: %v, want 4429 rate_limited", rest.DefaultThrottles.AuthFailure.Burst, ce)
	}
}

// A websocket's token is verified again for each operation: once it is
// revoked, the connection can start nothing more.
func TestWebsocketOperationsNeedATokenStillValid(t *testing.T) {
	e := edgeEnv(t, rest.DefaultThrottles.GraphQL, 0)
	admin := service.New(e.db, service.Options{})
	secret, tok, err := admin.CreateToken(context.Background(), "alice", "acme", coderun.AllScopes, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := e.dial("graphql-transport-ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": "Bearer " + secret})})
	expect(t, conn, "connection_ack")
	query := payload(t, map[string]any{"query": `{ handle(handle: "acme") { handle } }`})
	send(t, conn, wsMessage{ID: "1", Type: "subscribe", Payload: query})
	if m := expect(t, conn, "next"); !strings.Contains(string(m.Payload), `"handle":"acme"`) {
		t.Fatalf("before revocation: %s", m.Payload)
	}
	expect(t, conn, "complete")

	if _, err := admin.RevokeToken(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	send(t, conn, wsMessage{ID: "2", Type: "subscribe", Payload: query})
	m := next(t, conn)
	if m.Type != "next" || !strings.Contains(string(m.Payload), `"code":"unauthenticated"`) || strings.Contains(string(m.Payload), `"handle":"acme"`) {
		t.Fatalf("after revocation: %s %s", m.Type, m.Payload)
	}
}

// A websocket signs in after it opens (the token comes in connection_init):
// its operations are charged to that user, not to the address it came from,
// which other users may share.
func TestWebsocketOperationsAreChargedToTheirUser(t *testing.T) {
	e := edgeEnv(t, rest.Rate{PerSecond: 0.01, Burst: 20}, 0)
	open := func(user string) *websocket.Conn {
		conn, _, err := e.dial("graphql-transport-ws", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": e.jwt(user)})})
		expect(t, conn, "connection_ack")
		return conn
	}
	query := func(conn *websocket.Conn, id, handle string) wsMessage {
		send(t, conn, wsMessage{ID: id, Type: "subscribe", Payload: payload(t, map[string]string{"query": `{ handle(handle: "` + handle + `") { handle } }`})})
		return next(t, conn)
	}
	alice, mallory := open("alice"), open("mallory")
	refused := false
	for i := range 20 {
		m := query(alice, fmt.Sprint(i), "acme")
		if m.Type == "error" {
			if !strings.Contains(string(m.Payload), `"code":"rate_limited"`) {
				t.Fatalf("alice's operation %d: %s", i, m.Payload)
			}
			refused = true
			break
		}
		expect(t, alice, "complete")
	}
	if !refused {
		t.Fatal("alice was never refused")
	}
	if m := query(mallory, "1", "globex"); m.Type != "next" || !strings.Contains(string(m.Payload), `"handle":"globex"`) {
		t.Fatalf("mallory, from the same address: %s %s", m.Type, m.Payload)
	}
}
