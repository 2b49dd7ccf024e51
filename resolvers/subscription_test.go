package resolvers_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	graphql "github.com/hasura/go-graphql-client"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/resolvers"
)

// The subscriptions are followed with github.com/hasura/go-graphql-client, a
// client we did not write, over both subprotocols.
var protocols = map[string]graphql.SubscriptionProtocolType{
	"graphql-transport-ws": graphql.GraphQLWS,
	"graphql-ws":           graphql.SubscriptionsTransportWS,
}

const (
	outputSubscription = `subscription($h: String!, $id: String!, $after: Int) {
  codeRunOutput(handle: $h, runId: $id, afterSeq: $after) { seq stream data encoding at } }`
	statusSubscription = `subscription($h: String!, $id: String!) {
  codeRunStatus(handle: $h, runId: $id) { runId status at reason exitCode error { code message } } }`
)

// ticker prints "line 1" … "line 20", one every 100 ms.
const ticker = `for i in $(seq 1 20); do echo "line $i"; sleep 0.1; done`

var tickerOutput = func() string {
	var b strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}()

type chunk struct {
	Seq      int64     `json:"seq"`
	Stream   string    `json:"stream"`
	Data     string    `json:"data"`
	Encoding string    `json:"encoding"`
	At       time.Time `json:"at"`
	received time.Time
}

type statusEvent struct {
	RunID    string          `json:"runId"`
	Status   string          `json:"status"`
	At       time.Time       `json:"at"`
	Reason   string          `json:"reason"`
	ExitCode *int            `json:"exitCode"`
	Error    json.RawMessage `json:"error"`
}

// subscriber is one subscription as a client sees it: what it received, the
// error it ended with, and whether the server completed it.
type subscriber[T any] struct {
	mu       sync.Mutex
	events   []T
	errs     graphql.Errors
	done     chan struct{}
	doneOnce sync.Once
}

func (s *subscriber[T]) finish() { s.doneOnce.Do(func() { close(s.done) }) }

func (s *subscriber[T]) received() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *subscriber[T]) errors() graphql.Errors {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs
}

// wait waits for the server to complete the subscription.
func (s *subscriber[T]) wait(t testing.TB, within time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(within):
		t.Fatalf("subscription not complete after %s (%d events, errors %v)", within, len(s.received()), s.errors())
	}
}

// wsClient is one websocket connection of the hasura client.
type wsClient struct {
	t  testing.TB
	c  *graphql.SubscriptionClient
	mu sync.Mutex
	// onDone finishes each subscription; completed holds those the server
	// completed before subscribe registered them.
	onDone    map[string]func()
	completed map[string]bool
}

func (e *env) wsClient(user string, protocol graphql.SubscriptionProtocolType) *wsClient {
	e.t.Helper()
	w := &wsClient{t: e.t, onDone: map[string]func(){}, completed: map[string]bool{}}
	w.c = graphql.NewSubscriptionClient("ws" + strings.TrimPrefix(e.endpoint, "http")).
		WithProtocol(protocol).
		WithConnectionParams(map[string]any{"Authorization": e.jwt(user)}).
		WithReadLimit(1 << 20). // a chunk is up to 64 KiB
		WithExitWhenNoSubscription(false).
		WithSyncMode(true). // else it hands messages to handlers out of order
		WithRetryTimeout(time.Second).
		WithLog(func(...any) {}).
		OnError(func(_ *graphql.SubscriptionClient, err error) error { return err }).
		OnSubscriptionComplete(func(sub graphql.Subscription) {
			w.mu.Lock()
			done := w.onDone[sub.GetKey()]
			w.completed[sub.GetKey()] = done == nil
			w.mu.Unlock()
			if done != nil {
				done()
			}
		})
	// Subscriptions are made once the connection is acknowledged: the client
	// does not reliably send those made while it is still connecting.
	connected := make(chan struct{})
	w.c.OnConnected(sync.OnceFunc(func() { close(connected) }))
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = w.c.Run() }()
	e.t.Cleanup(func() { w.close(); <-stopped })
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		e.t.Fatal("the GraphQL client did not connect within 30 s")
	}
	return w
}

func (w *wsClient) close() { _ = w.c.Close() }

// subscribe starts a subscription whose events decode as T (the field's value).
func subscribe[T any](w *wsClient, query string, vars map[string]any) *subscriber[T] {
	w.t.Helper()
	s := &subscriber[T]{done: make(chan struct{})}
	id, err := w.c.Exec(query, vars, func(message []byte, err error) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		var gqlErrs graphql.Errors
		if errors.As(err, &gqlErrs) {
			s.errs = append(s.errs, gqlErrs...)
			return nil
		}
		if err != nil {
			s.errs = append(s.errs, graphql.Error{Message: err.Error()})
			return nil
		}
		var data map[string]json.RawMessage
		if err := json.Unmarshal(message, &data); err != nil || len(data) != 1 {
			s.errs = append(s.errs, graphql.Error{Message: fmt.Sprintf("data %s: %v", message, err)})
			return nil
		}
		var v T
		for _, raw := range data {
			if err := json.Unmarshal(raw, &v); err != nil {
				s.errs = append(s.errs, graphql.Error{Message: err.Error()})
				return nil
			}
		}
		if c, ok := any(&v).(*chunk); ok {
			c.received = time.Now()
		}
		s.events = append(s.events, v)
		return nil
	})
	if err != nil {
		w.t.Fatalf("subscribe: %v", err)
	}
	w.mu.Lock()
	w.onDone[id] = s.finish
	if w.completed[id] {
		s.finish()
	}
	w.mu.Unlock()
	return s
}

func (w *wsClient) followOutput(runID string, afterSeq int64) *subscriber[chunk] {
	return subscribe[chunk](w, outputSubscription, map[string]any{"h": "acme", "id": runID, "after": afterSeq})
}

func (w *wsClient) followStatus(handle, runID string) *subscriber[statusEvent] {
	return subscribe[statusEvent](w, statusSubscription, map[string]any{"h": handle, "id": runID})
}

// checkSequence asserts that chunks are seq after+1, after+2, … and returns
// their data joined.
func checkSequence(t testing.TB, chunks []chunk, after int64) string {
	t.Helper()
	var b strings.Builder
	for i, c := range chunks {
		if c.Seq != after+int64(i)+1 || c.Stream != "STDOUT" || c.Encoding != "UTF8" {
			t.Fatalf("chunk %d is %+v, want seq %d of stdout", i, c, after+int64(i)+1)
		}
		b.WriteString(c.Data)
	}
	return b.String()
}

func TestSubscriptionsFollowARunAsItHappens(t *testing.T) {
	e := newRunEnv(t, resolvers.Options{})
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			client := e.wsClient("vera", protocol) // a viewer may follow runs
			id := e.submit(map[string]any{"code": ticker}).RunID
			status := client.followStatus("acme", id)
			output := client.followOutput(id, 0)

			output.wait(t, 30*time.Second)
			status.wait(t, 30*time.Second)
			run := e.finished(id)
			finishedAt, _ := time.Parse(time.RFC3339Nano, *run.FinishedAt)

			chunks := output.received()
			if errs := output.errors(); len(errs) > 0 {
				t.Fatalf("output errors: %v", errs)
			}
			if got := checkSequence(t, chunks, 0); got != tickerOutput {
				t.Fatalf("output %q, want %q", got, tickerOutput)
			}
			// Live: the first lines arrived while the program still had more
			// than a second to run, each soon after it was stored.
			if lead := finishedAt.Sub(chunks[0].received); lead < time.Second {
				t.Errorf("first chunk received only %s before the run finished", lead)
			}
			for _, c := range chunks {
				if lag := c.received.Sub(c.At); lag > time.Second {
					t.Errorf("chunk %d received %s after it was stored", c.Seq, lag)
				}
			}

			events := status.received()
			if errs := status.errors(); len(errs) > 0 {
				t.Fatalf("status errors: %v", errs)
			}
			var statuses []string
			for _, ev := range events {
				if ev.RunID != id {
					t.Fatalf("event of run %s", ev.RunID)
				}
				statuses = append(statuses, ev.Status)
			}
			// The subscription starts with the status the run is in, so it
			// may have missed the first; it misses nothing after it.
			lifecycle := []string{"QUEUED", "STARTING", "RUNNING", "SUCCEEDED"}
			if len(statuses) < 2 || !slices.Equal(statuses, lifecycle[len(lifecycle)-len(statuses):]) {
				t.Fatalf("statuses %v, want a tail of %v", statuses, lifecycle)
			}
			last := events[len(events)-1]
			if last.ExitCode == nil || *last.ExitCode != 0 || string(last.Error) != "null" || last.At.IsZero() || last.Reason == "" {
				t.Errorf("terminal event %+v", last)
			}
		})
	}
}

func TestSubscriptionsResumeAfterSeq(t *testing.T) {
	e := newRunEnv(t, resolvers.Options{})
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			id := e.submit(map[string]any{"code": ticker}).RunID
			first := e.wsClient("alice", protocol)
			before := first.followOutput(id, 0)
			deadline := time.Now().Add(30 * time.Second)
			for len(before.received()) < 5 {
				if time.Now().After(deadline) {
					t.Fatalf("only %d chunks after 30 s", len(before.received()))
				}
				time.Sleep(20 * time.Millisecond)
			}
			first.close() // the connection drops mid-run
			seen := before.received()
			last := seen[len(seen)-1].Seq
			if e.run("alice", "acme", id).Status == "SUCCEEDED" {
				t.Fatal("the run finished before the client disconnected; the test proves nothing")
			}

			after := e.wsClient("alice", protocol).followOutput(id, last)
			after.wait(t, 30*time.Second)
			rest := after.received()
			if got := checkSequence(t, seen, 0) + checkSequence(t, rest, last); got != tickerOutput {
				t.Fatalf("output across the reconnect %q, want %q", got, tickerOutput)
			}
		})
	}
}

func TestSubscriptionsFanOutWithoutLeaks(t *testing.T) {
	e := newRunEnv(t, resolvers.Options{})
	// A warm-up run, so that pools and the hub's first feed are not counted.
	warm := e.wsClient("alice", graphql.GraphQLWS)
	warmID := e.submit(map[string]any{"code": "echo warm"}).RunID
	warm.followOutput(warmID, 0).wait(t, 30*time.Second)
	warm.close()
	time.Sleep(200 * time.Millisecond)
	goroutines := runtime.NumGoroutine()

	const clients, perClient = 4, 50 // 200 subscribers, at the default per-connection limit
	id := e.submit(map[string]any{"code": ticker}).RunID
	var subs []*subscriber[chunk]
	var conns []*wsClient
	for i := range clients {
		protocol := graphql.GraphQLWS
		if i%2 == 1 {
			protocol = graphql.SubscriptionsTransportWS
		}
		c := e.wsClient("alice", protocol)
		conns = append(conns, c)
		for range perClient {
			subs = append(subs, c.followOutput(id, 0))
		}
	}
	for i, s := range subs {
		s.wait(t, 60*time.Second)
		if errs := s.errors(); len(errs) > 0 {
			t.Fatalf("subscriber %d: %v", i, errs)
		}
		if got := checkSequence(t, s.received(), 0); got != tickerOutput {
			t.Fatalf("subscriber %d got %q", i, got)
		}
	}
	for _, c := range conns {
		c.close()
	}

	// Every goroutine of the subscriptions, their connections and the run's
	// feed ends; a few may belong to the HTTP client's idle connections.
	const tolerance = 10
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines+tolerance {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after unsubscribing, %d before:\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSubscriptionsDropASlowConsumer(t *testing.T) {
	// Subscribers may fall 64 chunks (4 MiB) behind, room for a normal one on
	// a loaded machine; the slow one falls further, or its writes time out.
	e := newRunEnvWith(t, resolvers.Options{WriteTimeout: 2 * time.Second}, events.Options{Buffer: 64})
	// A chatty runtime, allowed 16 MiB of output.
	e.put("alice", "chatty", map[string]any{"image": demoImage, "digest": testenv.BusyboxImage(t, demoImage),
		"command": []string{"sh", "main.sh"}, "entrypointFile": "main.sh",
		"limits": map[string]any{"timeoutSeconds": 60, "memoryMiB": 64, "pids": 32, "outputBytes": 16 << 20}})
	e.data("alice", `mutation { validateCodeRuntimeImage(handle: "acme", key: "chatty") { key } }`, nil, &struct{}{})
	const size = 8_000_000
	// 8 MB over about 4 s: a reader keeps up easily; one that reads nothing
	// falls behind by more than its buffer and the kernel's.
	id := e.submit(map[string]any{"runtimeKey": "chatty", "code": fmt.Sprintf(
		"for i in $(seq 1 40); do yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c %d; sleep 0.1; done", size/40)}).RunID

	// The slow one: a raw client with a small receive buffer that does not
	// read until the run is over. (Small, not tiny: what the kernel holds is
	// read at the end, and a tiny window makes that crawl.)
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			err = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}
	slow, _, err := d.Dial("ws"+strings.TrimPrefix(e.endpoint, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	send(t, slow, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": e.jwt("alice")})})
	expect(t, slow, "connection_ack")
	send(t, slow, wsMessage{ID: "1", Type: "subscribe", Payload: payload(t, map[string]any{"query": outputSubscription,
		"variables": map[string]any{"h": "acme", "id": id, "after": 0}})})

	// The normal one reads as fast as it can. On a starved machine even it
	// may fall behind; then it resumes where the error says, as a client
	// should, and still gets every byte once, in order.
	client := e.wsClient("alice", graphql.GraphQLWS)
	var total, resumes int
	for after := int64(0); ; {
		normal := client.followOutput(id, after)
		normal.wait(t, 60*time.Second)
		chunks := normal.received()
		total += len(checkSequence(t, chunks, after))
		after += int64(len(chunks))
		errs := normal.errors()
		if len(errs) == 0 {
			break
		}
		if len(errs) > 1 || errs[0].Extensions["code"] != "subscriber_too_slow" || errs[0].Extensions["resumeAfterSeq"] != float64(after) || resumes == 10 {
			t.Fatalf("normal subscriber after %d bytes and %d resumes: %v", total, resumes, errs)
		}
		resumes++
	}
	run := e.finished(id)
	finishedAt, _ := time.Parse(time.RFC3339Nano, *run.FinishedAt)
	t.Logf("the normal subscriber resumed %d times", resumes)
	// Generous for a loaded machine under -race; a normal subscriber held
	// back by the slow one would wait for it forever.
	if late := time.Since(finishedAt); late > 10*time.Second {
		t.Errorf("the normal subscriber completed %s after the run finished", late)
	}
	if total != size {
		t.Fatalf("normal subscriber: %d bytes, want %d", total, size)
	}

	// Now the slow one reads: what the kernel held for it, then the end of a
	// connection the server gave up on, never the whole output.
	var got int
	var tooSlow bool
	for {
		slow.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m wsMessage
		err := slow.ReadJSON(&m)
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			t.Fatalf("the slow consumer's connection is still open after %d bytes", got)
		}
		if err != nil {
			break
		}
		switch m.Type {
		case "next":
			var p struct {
				Data struct {
					CodeRunOutput *chunk `json:"codeRunOutput"`
				} `json:"data"`
				Errors []gqlError `json:"errors"`
			}
			json.Unmarshal(m.Payload, &p)
			if c := p.Data.CodeRunOutput; c != nil {
				got += len(c.Data)
			}
			for _, e := range p.Errors {
				tooSlow = tooSlow || e.Extensions["code"] == coderun.ESubscriberTooSlow
			}
		case "complete":
			if !tooSlow {
				t.Fatalf("the slow consumer was completed normally after %d bytes", got)
			}
		}
	}
	if got >= size {
		t.Fatalf("the slow consumer received all %d bytes", got)
	}
	t.Logf("the slow consumer got %d of %d bytes before it was dropped (told it was too slow: %v)", got, size, tooSlow)
}

func TestSubscriptionsToAnotherTenantsRunAreNotFound(t *testing.T) {
	e := newRunEnv(t, resolvers.Options{})
	id := e.finished(e.submit(map[string]any{"code": "echo secret"}).RunID).RunID
	for name, protocol := range protocols {
		t.Run(name, func(t *testing.T) {
			mallory := e.wsClient("mallory", protocol)
			for handle, code := range map[string]string{"acme": "handle_not_found", "globex": "run_not_found"} {
				output := subscribe[chunk](mallory, outputSubscription, map[string]any{"h": handle, "id": id})
				status := mallory.followStatus(handle, id)
				output.wait(t, 30*time.Second)
				status.wait(t, 30*time.Second)
				for what, errs := range map[string]graphql.Errors{"output": output.errors(), "status": status.errors()} {
					if len(errs) != 1 || errs[0].Extensions["code"] != code || !strings.HasPrefix(fmt.Sprint(errs[0].Extensions["requestId"]), "req_") {
						t.Errorf("%s of %s's run as mallory: errors %+v, want one %s", what, handle, errs, code)
					}
				}
				if len(output.received())+len(status.received()) > 0 {
					t.Errorf("mallory received data: %+v %+v", output.received(), status.received())
				}
			}
		})
	}
}

// expectFor reads past other operations' messages to the next of operation
// id, which must be of type typ.
func expectFor(t *testing.T, conn *websocket.Conn, id, typ string) wsMessage {
	t.Helper()
	for {
		if m := next(t, conn); m.ID == id {
			if m.Type != typ {
				t.Fatalf("operation %s: got %s %s, want %s", id, m.Type, m.Payload, typ)
			}
			return m
		}
	}
}

func TestWebsocketLimits(t *testing.T) {
	e := newRunEnv(t, resolvers.Options{MaxConnectionsPerCaller: 2, MaxSubscriptionsPerConnection: 2})
	id := e.submit(map[string]any{"code": "sleep 30"}).RunID
	t.Cleanup(func() {
		e.data("alice", `mutation($id: String!) { cancelCodeRun(handle: "acme", runId: $id) { status } }`, map[string]any{"id": id}, &struct{}{})
	})

	connect := func(user string) *websocket.Conn {
		conn, _, err := e.dial("graphql-transport-ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": e.jwt(user)})})
		return conn
	}
	follow := func(conn *websocket.Conn, opID string) {
		send(t, conn, wsMessage{ID: opID, Type: "subscribe", Payload: payload(t, map[string]any{"query": statusSubscription,
			"variables": map[string]any{"h": "acme", "id": id}})})
	}

	t.Run("subscriptions per connection", func(t *testing.T) {
		conn := connect("alice")
		expect(t, conn, "connection_ack")
		follow(conn, "1")
		expectFor(t, conn, "1", "next") // its current status
		follow(conn, "2")
		expectFor(t, conn, "2", "next")
		follow(conn, "3")
		m := expectFor(t, conn, "3", "next")
		var refused struct{ Errors []gqlError }
		json.Unmarshal(m.Payload, &refused)
		if m.ID != "3" || len(refused.Errors) != 1 || refused.Errors[0].Extensions["code"] != "SUBSCRIPTION_LIMIT_EXCEEDED" {
			t.Fatalf("third subscription: %s %s", m.ID, m.Payload)
		}
		expectFor(t, conn, "3", "complete")
		// Completing one makes room for another.
		send(t, conn, wsMessage{ID: "1", Type: "complete"})
		expectFor(t, conn, "1", "complete")
		follow(conn, "4")
		if m := expectFor(t, conn, "4", "next"); !strings.Contains(string(m.Payload), `"status":"`) {
			t.Fatalf("fourth subscription: %s %s", m.ID, m.Payload)
		}
		conn.Close()
	})

	t.Run("connections per user", func(t *testing.T) {
		// A user of their own: the previous test's connection may still be
		// closing on the server.
		for range 2 {
			expect(t, connect("carol"), "connection_ack")
		}
		ce := closeError(t, connect("carol"))
		if ce.Code != 4429 || !strings.HasPrefix(ce.Text, "CONNECTION_LIMIT_EXCEEDED:") {
			t.Fatalf("third connection closed with %d %q", ce.Code, ce.Text)
		}
		expect(t, connect("vera"), "connection_ack") // another user has their own
	})
}

func TestWebsocketDropsDeadPeers(t *testing.T) {
	e := newEnv(t, resolvers.Options{KeepAlive: 100 * time.Millisecond})
	for _, subprotocol := range []string{"graphql-transport-ws", "graphql-ws"} {
		t.Run(subprotocol, func(t *testing.T) {
			start := func() *websocket.Conn {
				conn, _, err := e.dial(subprotocol, nil)
				if err != nil {
					t.Fatal(err)
				}
				send(t, conn, wsMessage{Type: "connection_init", Payload: payload(t, map[string]string{"Authorization": e.jwt("alice")})})
				expect(t, conn, "connection_ack")
				return conn
			}
			// A live peer answers the pings (gorilla does while it reads).
			alive := start()
			reading := make(chan error, 1)
			go func() {
				for {
					if _, _, err := alive.ReadMessage(); err != nil {
						reading <- err
						return
					}
				}
			}()
			// A dead one does not: it reads nothing, so answers nothing.
			dead := start()
			time.Sleep(time.Second)

			select {
			case err := <-reading:
				t.Fatalf("the live peer was dropped: %v", err)
			default:
			}
			dead.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				_, _, err := dead.ReadMessage()
				var netErr net.Error
				if errors.As(err, &netErr) && netErr.Timeout() {
					t.Fatal("the dead peer's connection is still open")
				}
				if err != nil {
					break
				}
			}
		})
	}
}
