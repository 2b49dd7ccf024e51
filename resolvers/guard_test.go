package resolvers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
)

// fields repeats a selection n times, the i-th formatted by f.
func fields(n int, f func(i int) string) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(f(i))
		b.WriteByte(' ')
	}
	return b.String()
}

func TestShapeLimitsRefuseFloodsBeforeExecution(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	tests := []struct {
		name, query, code, limit, message string
	}{
		{"alias flood", `{ handle(handle: "acme") { ` + fields(30, func(i int) string { return "a" + strconv.Itoa(i) + ": id" }) + `} }`,
			"COMPLEXITY_LIMIT_EXCEEDED", "aliases", "operation uses 30 aliases once its fragments are expanded, which exceeds the limit of 20"},
		{"aliases spread through fragments", `{ handle(handle: "acme") { ...A ...B } }
			fragment A on Handle { ` + fields(11, func(i int) string { return "a" + strconv.Itoa(i) + ": id" }) + `}
			fragment B on Handle { ...A }`,
			"COMPLEXITY_LIMIT_EXCEEDED", "aliases", "operation uses 22 aliases once its fragments are expanded, which exceeds the limit of 20"},
		{"root fields", `{ ` + fields(10, func(i int) string { return "h" + strconv.Itoa(i) + `: handle(handle: "acme") { id }` }) + `}`,
			"COMPLEXITY_LIMIT_EXCEEDED", "rootFields", "operation selects 10 root fields, which exceeds the limit of 8"},
		{"root __typename flood", `{ ` + fields(9, func(i int) string { return "t" + strconv.Itoa(i) + ": __typename" }) + `}`,
			"COMPLEXITY_LIMIT_EXCEEDED", "rootFields", "operation selects 9 root fields, which exceeds the limit of 8"},
		{"directive flood", `{ handle(handle: "acme") { ` + fields(51, func(int) string { return "id @skip(if: false)" }) + `} }`,
			"COMPLEXITY_LIMIT_EXCEEDED", "directives", "operation uses 51 directives once its fragments are expanded, which exceeds the limit of 50"},
		{"deep", `{ handle(handle: "acme") { runtimes { edges { node { handle { runtimes { edges { node { handle { runtimes { edges { node { key } } } } } } } } } } } } }`,
			"DEPTH_LIMIT_EXCEEDED", "depth", "operation has depth 13, which exceeds the limit of 10"},
		{"token limit", `{ handle(handle: "acme") { ` + fields(resolvers.DefaultTokenLimit, func(int) string { return "id" }) + `} }`,
			"GRAPHQL_PARSE_FAILED", "", "exceeded token limit of " + strconv.Itoa(resolvers.DefaultTokenLimit)},
		{"fragment cycle", `{ handle(handle: "acme") { ...A } } fragment A on Handle { id ...B } fragment B on Handle { ...A }`,
			"GRAPHQL_VALIDATION_FAILED", "", `Cannot spread fragment "A" within itself via "B".`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rejectedBeforeExecution(t, e.do("alice", tt.query, nil), tt.code)
			if got.Message != tt.message {
				t.Errorf("message = %q, want %q", got.Message, tt.message)
			}
			if limit, _ := got.Extensions["limit"].(string); limit != tt.limit {
				t.Errorf("extensions.limit = %q, want %q", limit, tt.limit)
			}
			// The server is none the worse for it.
			var ok struct{ Handle struct{ Handle string } }
			e.data("alice", `{ handle(handle: "acme") { handle } }`, nil, &ok)
			if ok.Handle.Handle != "acme" {
				t.Errorf("a normal query after the refusal: %+v", ok)
			}
		})
	}
}

func TestShapeLimitsAdmitWhatTheyAllow(t *testing.T) {
	e := newEnv(t, resolvers.Options{Introspection: true})
	var out map[string]any
	e.data("alice", `{ `+fields(8, func(i int) string { return "h" + strconv.Itoa(i) + `: handle(handle: "acme") { id }` })+`}`, nil, &out)
	if len(out) != 8 {
		t.Errorf("8 root fields: %v", out)
	}
	e.data("alice", `{ handle(handle: "acme") { `+fields(20, func(i int) string { return "a" + strconv.Itoa(i) + ": id @include(if: true) @skip(if: false)" })+`} }`, nil, &out)
	// The standard introspection query, deep and wide as it is, fits.
	e.data("alice", introspectionQuery, nil, &out)
	if _, ok := out["__schema"]; !ok {
		t.Errorf("introspection: %v", out)
	}
}

func TestWideOperations(t *testing.T) {
	e := newEnv(t, resolvers.Options{ComplexityLimit: 500})
	wide := `{ handle(handle: "acme") { ` + fields(501, func(int) string { return "id" }) + `} }`
	got := rejectedBeforeExecution(t, e.do("alice", wide, nil), "COMPLEXITY_LIMIT_EXCEEDED")
	if got.Message != "operation selects more than 500 fields once its fragments are expanded, so its complexity exceeds the limit of 500" {
		t.Errorf("message = %q", got.Message)
	}

	// The longest operation the token limit lets through is answered. (Its
	// cost, n² merge checks for n repeats of one field, is measured by
	// BenchmarkShapeLimits.)
	e = newEnv(t, resolvers.Options{})
	var out struct{ Handle struct{ ID string } }
	e.data("alice", `{ handle(handle: "acme") { `+fields(resolvers.DefaultTokenLimit-10, func(int) string { return "id" })+`} }`, nil, &out)
	if out.Handle.ID == "" {
		t.Errorf("answered %+v", out)
	}
}

// introspectionQuery is the query GraphiQL and most clients send.
const introspectionQuery = `query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}`

// edgeEnv serves the GraphQL handler behind the real HTTP edge, charging
// GraphQL operations by cost to a bucket of graphql per caller.
func edgeEnv(t *testing.T, graphql rest.Rate, maxBody int64) *env {
	t.Helper()
	throttles := rest.DefaultThrottles
	throttles.GraphQL = graphql
	return edgeEnvWith(t, throttles, maxBody)
}

// edgeEnvWith is edgeEnv with every throttle given.
func edgeEnvWith(t *testing.T, throttles rest.Throttles, maxBody int64) *env {
	t.Helper()
	db := openDB(t)
	logs := &testenv.LogBuffer{}
	e := &env{t: t, db: db, logs: logs}
	log := slog.New(slog.NewTextHandler(logs, nil))
	svc := service.New(db, service.Options{Logger: log})
	// The requests served are written before the database closes.
	t.Cleanup(func() { svc.FlushRequests(context.Background()) })
	authn := newAuthenticator(svc)
	e.srv = httptest.NewServer(rest.New(rest.Options{
		Service:       svc,
		Authenticator: authn,
		GraphQL: resolvers.NewHandler(svc, resolvers.Options{
			Authenticate: rest.GuardAuthentication(authn.Authenticate),
			Charge:       rest.Charge,
			Logger:       log,
		}),
		Throttles:    &throttles,
		MaxBodyBytes: maxBody,
		Logger:       log,
	}))
	t.Cleanup(e.srv.Close)
	e.endpoint = e.srv.URL + "/graphql"
	return e
}

func TestOperationsAreChargedByCost(t *testing.T) {
	e := edgeEnv(t, rest.Rate{PerSecond: 1, Burst: 100}, 0)
	// 1 for handle, 1 + 3 × 20 for the page: 62, and 1 for the request.
	const costly = `{ handle(handle: "acme") { runtimes(first: 20) { edges { node { key } } } } }`

	first, res := e.post("alice", costly)
	if first.status != http.StatusOK || len(first.Errors) > 0 {
		t.Fatalf("first: %d %+v", first.status, first.Errors)
	}
	if got := res.Header.Get("X-RateLimit-Remaining"); got != "37" {
		t.Errorf("remaining after the first = %q, want 37", got)
	}

	second, res := e.post("alice", costly)
	got := onlyError(t, second, "rate_limited")
	if second.status != http.StatusTooManyRequests || len(second.Data) != 0 && string(second.Data) != "null" {
		t.Errorf("second: status %d, data %s; want 429 and no data", second.status, second.Data)
	}
	if !strings.HasPrefix(got.Message, "operation costs 62: ") {
		t.Errorf("message = %q", got.Message)
	}
	if ra, _ := got.Extensions["retryAfter"].(float64); ra < 20 || ra > 30 {
		t.Errorf("retryAfter = %v, want the ~26 s until 62 tokens are back", got.Extensions["retryAfter"])
	}
	if res.Header.Get("RateLimit-Policy") != `"graphql";q=100;w=100` || !strings.HasPrefix(res.Header.Get("RateLimit"), `"graphql";r=36;`) {
		t.Errorf("headers: RateLimit-Policy %q, RateLimit %q", res.Header.Get("RateLimit-Policy"), res.Header.Get("RateLimit"))
	}
	// Retry-After, the RateLimit header's t and extensions.retryAfter agree.
	retry := res.Header.Get("Retry-After")
	if want := fmt.Sprint(got.Extensions["retryAfter"]); retry != want || !strings.HasSuffix(res.Header.Get("RateLimit"), ";t="+retry) {
		t.Errorf("Retry-After %q, RateLimit %q, extensions.retryAfter %s; want all the same", retry, res.Header.Get("RateLimit"), want)
	}

	// A cheap one still fits; another caller's bucket is untouched.
	var ok struct{ Handle struct{ Handle string } }
	e.data("alice", `{ handle(handle: "acme") { handle } }`, nil, &ok)
	if _, res := e.post("vera", costly); res.StatusCode != http.StatusOK {
		t.Errorf("vera: %d", res.StatusCode)
	}
}

func TestOperationOverTheWholeQuotaIsRefused(t *testing.T) {
	e := edgeEnv(t, rest.Rate{PerSecond: 1, Burst: 50}, 0)
	r, _ := e.post("alice", `{ handle(handle: "acme") { runtimes(first: 20) { edges { node { key } } } } }`)
	got := onlyError(t, r, "rate_limited")
	if got.Message != "operation costs 62: a cost of 62 is more than the graphql quota of 50 allows at once" {
		t.Errorf("message = %q", got.Message)
	}
}

// post sends query as user and returns the decoded answer and the response.
func (e *env) post(user, query string) (response, *http.Response) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	return e.raw(user, bytes.NewReader(body), int64(len(body)))
}

// raw POSTs body (chunked when size is -1) as user.
func (e *env) raw(user string, body io.Reader, size int64) (response, *http.Response) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.endpoint, body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Test-User", user)
	req.Header.Set("Authorization", e.jwt(user))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, requestID: res.Header.Get("X-Request-Id")}
	if err := json.Unmarshal(raw, &r); err != nil {
		e.t.Fatalf("response is not JSON: %v\n%s", err, raw)
	}
	return r, res
}

func TestBatchesAreRefused(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	body := ` [{"query": "{ __typename }"}, {"query": "{ __typename }"}]`
	r, _ := e.raw("alice", strings.NewReader(body), int64(len(body)))
	if r.status != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", r.status)
	}
	got := onlyError(t, r, "invalid_request")
	if got.Message != "batched operations are not supported: send one operation per request" {
		t.Errorf("message = %q", got.Message)
	}
}

func TestHugeBodiesAreRefused(t *testing.T) {
	const limit = 64 << 10
	e := edgeEnv(t, rest.Rate{PerSecond: 1e6, Burst: 1e6}, limit)
	huge := `{"query": "{ handle(handle: \"` + strings.Repeat("a", 2*limit) + `\") { id } }"}`
	// Announced: the edge refuses it before reading a byte.
	if _, res := e.raw("alice", strings.NewReader(huge), int64(len(huge))); res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("with Content-Length: status %d, want 413", res.StatusCode)
	}
	// Chunked: refused once the limit is crossed.
	r, res := e.raw("alice", strings.NewReader(huge), -1)
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked: status %d, want 413", res.StatusCode)
	}
	onlyError(t, r, "payload_too_large")

	var ok struct{ Handle struct{ Handle string } }
	e.data("alice", `{ handle(handle: "acme") { handle } }`, nil, &ok)
	if ok.Handle.Handle != "acme" {
		t.Errorf("a normal query after: %+v", ok)
	}
}

// A mutation is charged its writes, one per mutation field, to its caller's
// bucket of writes at the write rate, as REST charges each PUT and POST:
// aliasing mutations into one operation does not get round the write
// throttle.
func TestMutationsAreChargedAsWrites(t *testing.T) {
	throttles := rest.DefaultThrottles
	throttles.Write = rest.Rate{PerSecond: 0.01, Burst: 5}
	e := edgeEnvWith(t, throttles, 0)
	puts := func(keys ...string) string {
		var b strings.Builder
		b.WriteString("mutation { ")
		for _, k := range keys {
			fmt.Fprintf(&b, `%s: putCodeRuntime(handle: "acme", key: %q, input: {image: "example/ruby", digest: %q}) { key } `, k, k, digestA)
		}
		return b.String() + "}"
	}
	if r, _ := e.post("alice", puts("a", "b", "c")); r.status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("three writes: %d %+v", r.status, r.Errors)
	}
	r, res := e.post("alice", puts("d", "e", "f"))
	got := onlyError(t, r, "rate_limited")
	if r.status != http.StatusTooManyRequests || !strings.Contains(got.Message, " and makes 3 writes: too many write requests") {
		t.Errorf("three more writes: %d %q; want 429, refused for its writes", r.status, got.Message)
	}
	retry := res.Header.Get("Retry-After")
	if !strings.HasPrefix(res.Header.Get("RateLimit-Policy"), `"write";q=5;`) || retry == "" || !strings.HasSuffix(res.Header.Get("RateLimit"), ";t="+retry) {
		t.Errorf("headers: RateLimit-Policy %q, RateLimit %q, Retry-After %q", res.Header.Get("RateLimit-Policy"), res.Header.Get("RateLimit"), retry)
	}
	// Nothing of the refused operation was written; what is left fits.
	var page struct {
		Handle struct {
			Runtimes struct {
				Edges []struct{ Node struct{ Key string } }
			}
		}
	}
	e.data("alice", `{ handle(handle: "acme") { runtimes { edges { node { key } } } } }`, nil, &page)
	if n := len(page.Handle.Runtimes.Edges); n != 3 {
		t.Errorf("%d runtimes after the refusal, want 3", n)
	}
	if r, _ := e.post("alice", puts("d", "e")); r.status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("two writes: %d %+v", r.status, r.Errors)
	}
	// Another caller's writes are charged to their own bucket.
	if r, _ := e.post("mallory", strings.ReplaceAll(puts("a"), "acme", "globex")); r.status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("mallory: %d %+v", r.status, r.Errors)
	}
}

// An operation refused for its cost takes none of its writes: a client that
// retries it once its graphql bucket refills is not locked out of writing.
func TestMutationRefusedForItsCostTakesNoWrites(t *testing.T) {
	throttles := rest.DefaultThrottles
	throttles.GraphQL = rest.Rate{PerSecond: 20, Burst: 10}
	throttles.Write = rest.Rate{PerSecond: 0.001, Burst: 1}
	e := edgeEnvWith(t, throttles, 0)
	// 1 for the request and 8 for the query: 9 of 10.
	if r, _ := e.post("alice", `{ handle(handle: "acme") { runtimes(first: 2) { edges { node { key } } } } }`); r.status != http.StatusOK {
		t.Fatalf("query: %d %+v", r.status, r.Errors)
	}
	put := `mutation { putCodeRuntime(handle: "acme", key: "a", input: {image: "example/ruby", digest: "` + digestA + `"}) { key } }`
	r, _ := e.post("alice", put)
	if got := onlyError(t, r, "rate_limited"); !strings.Contains(got.Message, "too many graphql requests") {
		t.Fatalf("refused for %q, want for its cost", got.Message)
	}
	time.Sleep(time.Second) // the graphql bucket refills; the write bucket would take 1000 s
	if r, _ := e.post("alice", put); r.status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("the mutation again: %d %+v", r.status, r.Errors)
	}
}
