package rest_test

import (
	"net/http"
	"strings"
	"testing"
)

// Every answer carries a request id, and every error is a problem document
// with the same id, whether or not a route took the request.
func TestEveryResponseHasARequestID(t *testing.T) {
	s := newStack(t, "sqlite://"+t.TempDir()+"/db", nil)
	s.handle("acme", "alice")
	tok := s.userJWT("alice")

	r := s.do("GET", "/healthz", "", nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("X-Request-Id"), "req_") {
		t.Fatalf("healthz: %d, X-Request-Id %q", r.status, r.header.Get("X-Request-Id"))
	}
	expectProblem(t, s.do("GET", "/v2/nowhere", tok, nil), 404, "not_found")
	expectProblem(t, s.do("GET", "/v2/nowhere", "", nil), 404, "not_found")
	r = s.do("DELETE", "/v2/handles/acme/code-runtimes/py", tok, nil)
	expectProblem(t, r, 405, "method_not_allowed")
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "PUT") {
		t.Fatalf("Allow %q", allow)
	}
	ids := map[string]bool{}
	for range 20 {
		ids[s.do("GET", "/healthz", "", nil).header.Get("X-Request-Id")] = true
	}
	if len(ids) != 20 {
		t.Fatalf("request ids repeat: %d distinct of 20", len(ids))
	}
}

func TestReadiness(t *testing.T) {
	s := newStack(t, "sqlite://"+t.TempDir()+"/db", nil)
	r := s.do("GET", "/readyz", "", nil)
	if r.status != http.StatusOK || r.json(t)["checks"].(map[string]any)["database"] != "ok" {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
}

func TestOpenAPIDocumentIsServed(t *testing.T) {
	s := newStack(t, "sqlite://"+t.TempDir()+"/db", nil)
	r := s.do("GET", "/v2/openapi.json", "", nil)
	if r.status != 200 || r.json(t)["openapi"] != "3.1.0" {
		t.Fatalf("openapi.json: %d", r.status)
	}
}
