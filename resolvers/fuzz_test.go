package resolvers_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/service"
)

// FuzzGraphQL posts arbitrary bodies to the real handler over a real SQLite
// store: whatever arrives, the answer is never a server error, always a JSON
// object, and no error in it is an internal one.
func FuzzGraphQL(f *testing.F) {
	for _, body := range []string{
		`{"query": "{ handle(handle: \"acme\") { handle runtimes(first: 2) { edges { node { key } } } } }"}`,
		`{"query": "query($h: String!) { handle(handle: $h) { id } }", "variables": {"h": "acme"}}`,
		`{"query": "query($h: String!) { handle(handle: $h) { id } }", "variables": {"h": 1}}`,
		`{"query": "mutation { putCodeRuntime(handle: \"acme\", key: \"k\", input: {image: \"i\", digest: \"sha256:00\"}) { key } }"}`,
		`{"query": "{ node(id: \"SGFuZGxlOmFjbWU\") { id } }"}`,
		`{"query": "{ a: __typename b: __typename @skip(if: true) }", "operationName": "x"}`,
		`{"query": "{ handle(handle: \"acme\") { ...A } } fragment A on Handle { ...A }"}`,
		`{"query": "subscription { codeRunStatus(handle: \"acme\", runId: \"r\") { status } }"}`,
		`[{"query": "{ __typename }"}]`,
		`{"query": "{"}`, `{"query": 1}`, `null`, ``, "\x00",
	} {
		f.Add(body)
	}
	// Floods, each far past its limit: deep nesting, aliases, directives,
	// fragments spreading one another, a huge string.
	query := func(q string) string {
		b, _ := json.Marshal(map[string]string{"query": q})
		return string(b)
	}
	f.Add(query("{ handle(handle: \"acme\") " + strings.Repeat("{ runs(first: 1) { edges { node { runtime { handle ", 40) + "{ id" + strings.Repeat(" } } } } }", 40) + " } }"))
	f.Add(query("{ " + strings.Repeat("a: __typename ", 5000) + "}"))
	f.Add(query("{ __typename " + strings.Repeat("@include(if: true) ", 5000) + "}"))
	f.Add(query("{ handle(handle: \"acme\") { ...A } } fragment A on Handle { ...B } fragment B on Handle { ...A id }"))
	f.Add(query(`{ handle(handle: "` + strings.Repeat("x", 1<<20) + `") { id } }`))
	db := openDB(f)
	quiet := slog.New(slog.DiscardHandler)
	svc := service.New(db, service.Options{Logger: quiet})
	// The requests served are written before the database closes.
	f.Cleanup(func() { svc.FlushRequests(context.Background()) })
	h := withTestEdge(resolvers.NewHandler(svc, resolvers.Options{
		Authenticate:  newAuthenticator(nil).Authenticate,
		Introspection: true,
		Logger:        quiet,
	}))
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/graphql", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Test-User", "alice")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%q: status %d: %s", body, rec.Code, rec.Body)
		}
		var r struct {
			Errors []gqlError `json:"errors"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
			t.Fatalf("%q: the answer is not a JSON object: %v\n%s", body, err, rec.Body)
		}
		for _, e := range r.Errors {
			if e.Extensions["code"] == "internal" {
				t.Fatalf("%q: internal error: %s", body, rec.Body)
			}
		}
	})
}
