package rest_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
)

// graphql posts a query and returns the decoded answer.
func (s *stack) graphql(token, query string, vars map[string]any) map[string]any {
	s.t.Helper()
	r := s.do("POST", "/graphql", token, map[string]any{"query": query, "variables": vars})
	return r.json(s.t)
}

// The dashboard (GraphQL) and legacy clients (REST) see the same runtime.
func TestGraphQLAndRESTAgreeOnRuntimes(t *testing.T) {
	engine, err := docker.New(docker.WithInit(testenv.Init(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.CloseEngine(engine) })
	id := testenv.BusyboxImage(t, demoImage)
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, engine)
		s.handle("acme", "alice")
		tok := s.userJWT("alice")
		path := "/v2/handles/acme/code-runtimes/"
		s.do("PUT", path+"sh", tok, map[string]any{"image": demoImage, "digest": id, "command": []string{"sh", "main.sh"},
			"entrypointFile": "main.sh", "limits": map[string]any{"pids": 99}, "description": "busybox"})
		s.do("POST", path+"sh/validate-image", tok, nil)
		s.do("PUT", path+"broken", tok, runtimeBody(demoImage, aDigest))
		s.do("POST", path+"broken/validate-image", tok, nil)

		for _, key := range []string{"sh", "broken"} {
			want := s.do("GET", path+key, tok, nil).json(t)
			got := s.graphql(tok, `query($key: String!) { handle(handle: "acme") { runtime(key: $key) {
				handle { handle } key image digest command entrypointFile network description createdAt updatedAt
				limits { timeoutSeconds memoryMiB cpus pids outputBytes }
				validation { status checkedAt resolvedDigest error { code message } } } } }`, map[string]any{"key": key})
			rt := got["data"].(map[string]any)["handle"].(map[string]any)["runtime"].(map[string]any)
			// The GraphQL names: key for runtimeKey, the handle as a link,
			// enum values in capitals.
			rt["runtimeKey"] = rt["key"]
			delete(rt, "key")
			rt["handle"] = rt["handle"].(map[string]any)["handle"]
			v := rt["validation"].(map[string]any)
			v["status"] = strings.ToLower(v["status"].(string))
			a, _ := json.Marshal(rt)
			b, _ := json.Marshal(want)
			if string(a) != string(b) {
				t.Fatalf("GraphQL and REST differ for %s:\ngraphql %s\nrest    %s", key, a, b)
			}
		}
		if v := s.do("GET", path+"broken", tok, nil).json(t)["validation"].(map[string]any); v["status"] != "failed" {
			t.Fatalf("the broken runtime validated: %v", v)
		}
	})
}

// A GraphQL error names its code and the request id.
func TestGraphQLErrorsCarryCodeAndRequestID(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		s.handle("acme", "alice")
		s.handle("globex", "gary")
		r := s.do("POST", "/graphql", s.userJWT("alice"), map[string]any{"query": `mutation {
			putCodeRuntime(handle: "acme", key: "sh", input: {image: "", digest: "nope"}) { key } }`})
		body := r.json(t)
		errs := body["errors"].([]any)
		ext := errs[0].(map[string]any)["extensions"].(map[string]any)
		if ext["code"] != "validation_failed" || ext["requestId"] != r.header.Get("X-Request-Id") || ext["requestId"] == "" {
			t.Fatalf("errors %v, X-Request-Id %q", errs, r.header.Get("X-Request-Id"))
		}
		r = s.do("POST", "/graphql", s.userJWT("gary"), map[string]any{"query": `mutation {
			putCodeRuntime(handle: "acme", key: "sh", input: {image: "x", digest: "` + aDigest + `"}) { key } }`})
		ext = r.json(t)["errors"].([]any)[0].(map[string]any)["extensions"].(map[string]any)
		if ext["code"] != "handle_not_found" {
			t.Fatalf("another tenant's write: %v", ext)
		}
		if got := s.graphql(s.userJWT("gary"), `{ handle(handle: "acme") { handle } }`, nil); got["data"].(map[string]any)["handle"] != nil {
			t.Fatalf("another tenant's handle: %v", got)
		}
	})
}

// What the edge refuses at /graphql before GraphQL sees it is still answered
// as GraphQL clients expect: errors[] with the code and request id.
func TestGraphQLEdgeRefusalsAreGraphQLErrors(t *testing.T) {
	s := newStack(t, "sqlite://"+t.TempDir()+"/db", nil)
	for _, tc := range []struct {
		method, token string
		status        int
		code, header  string
	}{
		{"POST", "", http.StatusUnauthorized, "unauthenticated", "WWW-Authenticate"},
		{"POST", "crp_nope", http.StatusUnauthorized, "unauthenticated", "WWW-Authenticate"},
		{"GET", s.userJWT("alice"), http.StatusMethodNotAllowed, "method_not_allowed", "Allow"},
		{"PUT", s.userJWT("alice"), http.StatusMethodNotAllowed, "method_not_allowed", "Allow"},
	} {
		r := s.do(tc.method, "/graphql", tc.token, map[string]any{"query": "{ __typename }"})
		var got struct {
			Errors []struct {
				Message    string
				Extensions map[string]any
			}
		}
		if err := json.Unmarshal(r.body, &got); err != nil || r.status != tc.status || len(got.Errors) != 1 {
			t.Fatalf("%s with %q: %d %s", tc.method, tc.token, r.status, r.body)
		}
		ext := got.Errors[0].Extensions
		if ext["code"] != tc.code || ext["requestId"] != r.header.Get("X-Request-Id") || r.header.Get(tc.header) == "" ||
			!strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Fatalf("%s with %q: %v, headers %v", tc.method, tc.token, got, r.header)
		}
	}
}
