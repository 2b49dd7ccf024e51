package resolvers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gharart/coderun/resolvers"
)

// rejectedBeforeExecution asserts r is a request-level refusal with code: 422,
// one error, and no data at all (nothing ran).
func rejectedBeforeExecution(t *testing.T, r response, code string) gqlError {
	t.Helper()
	if r.status != http.StatusUnprocessableEntity {
		t.Errorf("status = %d, want 422", r.status)
	}
	if len(r.Data) != 0 && string(r.Data) != "null" {
		t.Errorf("data = %s, want none: the operation must not run", r.Data)
	}
	return onlyError(t, r, code)
}

// A fragment chain ten fields deep: handle › runtimes › edges › node › handle ›
// runtimes › edges › node › handle › id.
const deepFragments = `
fragment OfHandle on Handle { runtimes(first: 1) { edges { node { ...OfRuntime } } } }
fragment OfRuntime on CodeRuntime { handle { runtimes(first: 1) { edges { node { handle { LEAF } } } } } }
`

func TestDepthLimit(t *testing.T) {
	e := newEnv(t, resolvers.Options{DepthLimit: 10})
	e.put("alice", "python312", map[string]any{"image": "example/python", "digest": digestA})

	atLimit := `{ handle(handle: "acme") { ...OfHandle } }` + strings.Replace(deepFragments, "LEAF", "id", 1)
	var ok struct{ Handle map[string]any }
	e.data("alice", atLimit, nil, &ok)

	tooDeep := `{ handle(handle: "acme") { ...OfHandle } }` + strings.Replace(deepFragments, "LEAF", "limits { maxActiveRuns }", 1)
	got := rejectedBeforeExecution(t, e.do("alice", tooDeep, nil), "DEPTH_LIMIT_EXCEEDED")
	if got.Message != "operation has depth 11, which exceeds the limit of 10" {
		t.Errorf("message = %q", got.Message)
	}

	// The same depth in a mutation is refused before the mutation runs.
	mutation := `mutation { putCodeRuntime(handle: "acme", key: "ruby", input: {image: "example/ruby", digest: "` + digestA + `"}) {
	  handle { runtimes(first: 1) { edges { node { handle { runtimes(first: 1) { edges { node { handle { id } } } } } } } } }
	} }`
	rejectedBeforeExecution(t, e.do("alice", mutation, nil), "DEPTH_LIMIT_EXCEEDED")
	assertNoRuntime(t, e, "ruby")
}

func TestComplexityLimitMultipliesConnectionsByFirst(t *testing.T) {
	// Each page item below costs 9 (edges, cursor, node and six fields); the
	// mutation and handle around it cost 3.
	e := newEnv(t, resolvers.Options{ComplexityLimit: 400})
	mutation := func(first string) string {
		return `mutation { putCodeRuntime(handle: "acme", key: "ruby", input: {image: "example/ruby", digest: "` + digestA + `"}) {
		  handle { runtimes(first: ` + first + `) { edges { cursor node { key image digest command entrypointFile description } } } }
		} }`
	}
	got := rejectedBeforeExecution(t, e.do("alice", mutation("100"), nil), "COMPLEXITY_LIMIT_EXCEEDED")
	if !strings.Contains(got.Message, "exceeds the limit of 400") || got.Extensions["limit"] != "complexity" {
		t.Errorf("message = %q, extensions.limit = %v; want complexity", got.Message, got.Extensions["limit"])
	}
	assertNoRuntime(t, e, "ruby")

	// Leaving `first` out prices the page at the default of 50 items: 454.
	rejectedBeforeExecution(t, e.do("alice", strings.Replace(mutation("1"), "(first: 1)", "", 1), nil), "COMPLEXITY_LIMIT_EXCEEDED")
	assertNoRuntime(t, e, "ruby")

	// The same selection over 40 items (364) is cheap enough to run.
	var out struct{ PutCodeRuntime map[string]any }
	e.data("alice", mutation("40"), nil, &out)
}

func assertNoRuntime(t *testing.T, e *env, key string) {
	t.Helper()
	var got struct {
		Handle struct{ Runtime any } `json:"handle"`
	}
	e.data("alice", `query($k: String!) { handle(handle: "acme") { runtime(key: $k) { key } } }`, map[string]any{"k": key}, &got)
	if got.Handle.Runtime != nil {
		t.Fatalf("runtime %s exists: the rejected mutation ran", key)
	}
}

func TestGraphQLLayerErrorsKeepTheirCodes(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	rejectedBeforeExecution(t, e.do("alice", `{ handle(handle: "acme") {`, nil), "GRAPHQL_PARSE_FAILED")
	got := rejectedBeforeExecution(t, e.do("alice", `{ handle(handle: "acme") { owner } }`, nil), "GRAPHQL_VALIDATION_FAILED")
	if !strings.Contains(got.Message, `"owner"`) {
		t.Errorf("message = %q", got.Message)
	}
	rejectedBeforeExecution(t, e.do("alice", `query($h: String!) { handle(handle: $h) { id } }`, nil), "GRAPHQL_VALIDATION_FAILED")
}

func TestIntrospectionOnlyWhenEnabled(t *testing.T) {
	const query = `{ __schema { queryType { name } } __type(name: "CodeRuntime") { fields { name } } }`

	off := newEnv(t, resolvers.Options{})
	r := off.do("alice", query, nil)
	if r.status != http.StatusUnprocessableEntity || len(r.Errors) != 2 {
		t.Fatalf("introspection off: status %d, errors %+v", r.status, r.Errors)
	}
	for _, err := range r.Errors {
		if err.Extensions["code"] != "GRAPHQL_VALIDATION_FAILED" || err.Message != "introspection is disabled on this server" {
			t.Errorf("introspection off: error %+v", err)
		}
	}
	var typename struct {
		Typename string `json:"__typename"`
	}
	off.data("alice", `{ __typename }`, nil, &typename)
	if typename.Typename != "Query" {
		t.Errorf("__typename = %q", typename.Typename)
	}

	on := newEnv(t, resolvers.Options{Introspection: true})
	var schema struct {
		Schema struct{ QueryType struct{ Name string } } `json:"__schema"`
		Type   struct{ Fields []struct{ Name string } }  `json:"__type"`
	}
	on.data("alice", query, nil, &schema)
	if schema.Schema.QueryType.Name != "Query" || len(schema.Type.Fields) != 13 {
		t.Errorf("introspection on: %+v", schema)
	}
}

func TestFragmentBombIsRefusedQuickly(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	start := time.Now()
	r := e.do("alice", fragmentBomb(60), nil)
	// A liveness bound, not a speed target (BenchmarkShapeLimits measures
	// that): expanding the fragments would never finish.
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("refusing took %v", took)
	}
	got := rejectedBeforeExecution(t, r, "COMPLEXITY_LIMIT_EXCEEDED")
	if want := fmt.Sprintf("more than %d fields", resolvers.DefaultComplexityLimit); !strings.Contains(got.Message, want) {
		t.Errorf("message = %q", got.Message)
	}
}

func TestDefaultComplexityAdmitsAFullPageOfRuntimes(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	const fields = `id key image digest command entrypointFile network description createdAt updatedAt
	  limits { timeoutSeconds memoryMiB cpus pids outputBytes }
	  validation { status checkedAt resolvedDigest error { code message } }`
	var page struct{ Handle map[string]any }
	e.data("vera", `{ handle(handle: "acme") { runtimes(first: 100) { edges { cursor node { `+fields+` } } pageInfo { hasNextPage endCursor } } } }`, nil, &page)

	// One level of nesting more is over the limit.
	nested := `{ handle(handle: "acme") { runtimes(first: 100) { edges { node { handle { runtimes(first: 100) { edges { node { key } } } } } } } } }`
	rejectedBeforeExecution(t, e.do("vera", nested, nil), "COMPLEXITY_LIMIT_EXCEEDED")
}

func TestMalformedRequestBody(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	res, err := http.Post(e.srv.URL, "application/json", strings.NewReader(`{"query": `))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := response{status: res.StatusCode, requestID: res.Header.Get("X-Request-Id")}
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", r.status)
	}
	onlyError(t, r, "invalid_request")
}

// fragmentBomb is an operation whose fragments each spread the next twice:
// 2^levels fields once expanded, from a query of a few kilobytes.
func fragmentBomb(levels int) string {
	var b strings.Builder
	b.WriteString(`{ handle(handle: "acme") { ...F0 } }`)
	for i := range levels {
		fmt.Fprintf(&b, "\nfragment F%d on Handle { id ...F%d ...F%d }", i, i+1, i+1)
	}
	fmt.Fprintf(&b, "\nfragment F%d on Handle { handle }", levels)
	return b.String()
}
