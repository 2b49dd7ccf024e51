package resolvers_test

import (
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/resolvers"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

const putRuntime = `mutation($handle: String!, $key: String!, $input: CodeRuntimeInput!) {
  putCodeRuntime(handle: $handle, key: $key, input: $input) {
    id key image digest command entrypointFile network description createdAt updatedAt
    limits { timeoutSeconds memoryMiB cpus pids outputBytes }
    validation { status checkedAt resolvedDigest error { code message } }
    handle { handle }
  }
}`

type runtimeData struct {
	ID             string   `json:"id"`
	Key            string   `json:"key"`
	Image          string   `json:"image"`
	Digest         string   `json:"digest"`
	Command        []string `json:"command"`
	EntrypointFile string   `json:"entrypointFile"`
	Network        bool     `json:"network"`
	Description    string   `json:"description"`
	CreatedAt      string   `json:"createdAt"`
	UpdatedAt      string   `json:"updatedAt"`
	Limits         struct {
		TimeoutSeconds int     `json:"timeoutSeconds"`
		MemoryMiB      int     `json:"memoryMiB"`
		CPUs           float64 `json:"cpus"`
		Pids           int     `json:"pids"`
		OutputBytes    int64   `json:"outputBytes"`
	} `json:"limits"`
	Validation struct {
		Status         string  `json:"status"`
		CheckedAt      *string `json:"checkedAt"`
		ResolvedDigest *string `json:"resolvedDigest"`
		Error          any     `json:"error"`
	} `json:"validation"`
	Handle struct {
		Handle string `json:"handle"`
	} `json:"handle"`
}

func (e *env) put(user, key string, input map[string]any) runtimeData {
	e.t.Helper()
	var out struct {
		PutCodeRuntime runtimeData `json:"putCodeRuntime"`
	}
	e.data(user, putRuntime, map[string]any{"handle": "acme", "key": key, "input": input}, &out)
	return out.PutCodeRuntime
}

func TestPutCodeRuntimeCreatesThenReplaces(t *testing.T) {
	e := newEnv(t, resolvers.Options{})

	created := e.put("alice", "python312", map[string]any{
		"image": "127.0.0.1:5000/qa/python:3.12", "digest": digestA,
		"command": []string{"python3", "main.py"}, "entrypointFile": "main.py",
		"limits":      map[string]any{"timeoutSeconds": 60, "memoryMiB": 512, "cpus": 1.5, "pids": 128, "outputBytes": 64 << 20},
		"description": "QA scripts",
	})
	if created.Key != "python312" || created.Image != "127.0.0.1:5000/qa/python:3.12" || created.Digest != digestA ||
		!slices.Equal(created.Command, []string{"python3", "main.py"}) || created.EntrypointFile != "main.py" ||
		created.Description != "QA scripts" || created.Network || created.Handle.Handle != "acme" {
		t.Fatalf("created runtime = %+v", created)
	}
	if l := created.Limits; l.TimeoutSeconds != 60 || l.MemoryMiB != 512 || l.CPUs != 1.5 || l.Pids != 128 || l.OutputBytes != 64<<20 {
		t.Fatalf("limits = %+v", l)
	}
	if v := created.Validation; v.Status != "PENDING" || v.CheckedAt != nil || v.ResolvedDigest != nil || v.Error != nil {
		t.Fatalf("validation of a new runtime = %+v", v)
	}
	createdAt, err := time.Parse(time.RFC3339Nano, created.CreatedAt)
	if err != nil || createdAt.Location() != time.UTC || !strings.HasSuffix(created.CreatedAt, "Z") {
		t.Fatalf("createdAt %q is not RFC 3339 UTC (%v)", created.CreatedAt, err)
	}
	if id, _ := base64.RawURLEncoding.DecodeString(created.ID); string(id) != "CodeRuntime:acme/python312" {
		t.Fatalf("id %q decodes to %q", created.ID, id)
	}

	// A PUT replaces the whole runtime: what it leaves out takes its default.
	replaced := e.put("alice", "python312", map[string]any{"image": "127.0.0.1:5000/qa/python:3.13", "digest": digestB})
	if replaced.CreatedAt != created.CreatedAt {
		t.Errorf("createdAt changed on replace: %s → %s", created.CreatedAt, replaced.CreatedAt)
	}
	if replaced.Image != "127.0.0.1:5000/qa/python:3.13" || replaced.Digest != digestB || replaced.Description != "" ||
		len(replaced.Command) != 0 || replaced.Limits.TimeoutSeconds != 30 || replaced.Limits.OutputBytes != 1<<20 {
		t.Errorf("replaced runtime kept old values or missed defaults: %+v", replaced)
	}

	var got struct {
		Handle struct {
			Runtime runtimeData  `json:"runtime"`
			Missing *runtimeData `json:"missing"`
		} `json:"handle"`
	}
	e.data("vera", `{ handle(handle: "acme") {
	  runtime(key: "python312") { key image digest }
	  missing: runtime(key: "nope") { key }
	} }`, nil, &got)
	if got.Handle.Runtime.Image != replaced.Image || got.Handle.Runtime.Digest != digestB {
		t.Errorf("viewer reads %+v, want the replaced runtime", got.Handle.Runtime)
	}
	if got.Handle.Missing != nil {
		t.Errorf("a runtime that does not exist = %+v, want null", got.Handle.Missing)
	}
}

func TestRuntimesArePagedInKeyOrder(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	for _, key := range []string{"ruby", "go", "python", "node", "java"} {
		e.put("alice", key, map[string]any{"image": "example/" + key, "digest": digestA})
	}
	const page = `query($after: String) { handle(handle: "acme") {
	  runtimes(first: 2, after: $after) { edges { cursor node { key } } pageInfo { hasNextPage endCursor } }
	} }`
	type pageData struct {
		Handle struct {
			Runtimes struct {
				Edges []struct {
					Cursor *string `json:"cursor"`
					Node   struct{ Key string }
				} `json:"edges"`
				PageInfo struct {
					HasNextPage bool    `json:"hasNextPage"`
					EndCursor   *string `json:"endCursor"`
				} `json:"pageInfo"`
			} `json:"runtimes"`
		} `json:"handle"`
	}
	var keys []string
	var after any
	for pages := 1; ; pages++ {
		var p pageData
		e.data("vera", page, map[string]any{"after": after}, &p)
		conn := p.Handle.Runtimes
		for _, edge := range conn.Edges {
			if edge.Cursor == nil {
				t.Fatalf("page %d: an edge without a cursor", pages)
			}
			keys = append(keys, edge.Node.Key)
		}
		last := conn.Edges[len(conn.Edges)-1].Cursor
		if conn.PageInfo.EndCursor == nil || *last != *conn.PageInfo.EndCursor {
			t.Fatalf("page %d: endCursor %v, last edge's cursor %v", pages, conn.PageInfo.EndCursor, *last)
		}
		if !conn.PageInfo.HasNextPage {
			if pages != 3 {
				t.Fatalf("last page is page %d, want 3", pages)
			}
			break
		}
		after = *conn.PageInfo.EndCursor
	}
	if want := []string{"go", "java", "node", "python", "ruby"}; !slices.Equal(keys, want) {
		t.Fatalf("keys over all pages = %v, want %v", keys, want)
	}

	// Any edge's cursor continues right after it.
	var first, rest pageData
	e.data("vera", page, map[string]any{"after": nil}, &first)
	e.data("vera", page, map[string]any{"after": *first.Handle.Runtimes.Edges[0].Cursor}, &rest)
	if got := rest.Handle.Runtimes.Edges; len(got) != 2 || got[0].Node.Key != "java" || got[1].Node.Key != "node" {
		t.Fatalf("after the first edge: %+v", got)
	}

	r := e.do("vera", `{ handle(handle: "acme") { runtimes(first: 101) { edges { cursor } } } }`, nil)
	onlyError(t, r, "validation_failed")
}

func TestQueryHandle(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	var got struct {
		Handle *struct {
			ID     string `json:"id"`
			Handle string `json:"handle"`
			Limits struct {
				MaxActiveRuns   int `json:"maxActiveRuns"`
				DailyWriteLimit int `json:"dailyWriteLimit"`
			} `json:"limits"`
			Usage struct {
				ActiveRuns         int    `json:"activeRuns"`
				DailyWritesUsed    int    `json:"dailyWritesUsed"`
				DailyWritesResetAt string `json:"dailyWritesResetAt"`
			} `json:"usage"`
		} `json:"handle"`
	}
	e.data("vera", `{ handle(handle: "acme") {
	  id handle limits { maxActiveRuns dailyWriteLimit } usage { activeRuns dailyWritesUsed dailyWritesResetAt }
	} }`, nil, &got)
	h := got.Handle
	if h == nil || h.Handle != "acme" || h.Limits.MaxActiveRuns != 4 || h.Limits.DailyWriteLimit != 1000 {
		t.Fatalf("handle = %+v", h)
	}
	if id, _ := base64.RawURLEncoding.DecodeString(h.ID); string(id) != "Handle:acme" {
		t.Errorf("id %q decodes to %q", h.ID, id)
	}
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if h.Usage.DailyWritesResetAt != midnight.Format(time.RFC3339) {
		t.Errorf("dailyWritesResetAt = %s, want the next UTC midnight %s", h.Usage.DailyWritesResetAt, midnight.Format(time.RFC3339))
	}
}

func TestHandleIsNullForNonMembersAndUnknownHandles(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	for _, tc := range []struct{ user, handle string }{
		{"mallory", "acme"},  // exists, but mallory is not a member
		{"alice", "initech"}, // does not exist
	} {
		r := e.do(tc.user, `query($h: String!) { handle(handle: $h) { handle } }`, map[string]any{"h": tc.handle})
		if r.status != http.StatusOK || len(r.Errors) != 0 || string(r.Data) != `{"handle":null}` {
			t.Errorf("%s asking for %s: status %d, data %s, errors %+v; want null and no error", tc.user, tc.handle, r.status, r.Data, r.Errors)
		}
	}
}

func TestNodeFetchesByGlobalID(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	rt := e.put("alice", "python312", map[string]any{"image": "example/python", "digest": digestA})
	var h struct {
		Handle struct{ ID string } `json:"handle"`
	}
	e.data("alice", `{ handle(handle: "acme") { id } }`, nil, &h)

	const node = `query($id: ID!) { node(id: $id) { id __typename ... on Handle { handle } ... on CodeRuntime { key digest } } }`
	var got struct {
		Node map[string]any `json:"node"`
	}
	e.data("vera", node, map[string]any{"id": rt.ID}, &got)
	if got.Node["__typename"] != "CodeRuntime" || got.Node["key"] != "python312" || got.Node["id"] != rt.ID {
		t.Errorf("node(runtime id) = %v", got.Node)
	}
	e.data("vera", node, map[string]any{"id": h.Handle.ID}, &got)
	if got.Node["__typename"] != "Handle" || got.Node["handle"] != "acme" {
		t.Errorf("node(handle id) = %v", got.Node)
	}

	for name, tc := range map[string]struct{ user, id string }{
		"another tenant's runtime": {"mallory", rt.ID},
		"another tenant's handle":  {"mallory", h.Handle.ID},
		"a runtime that is gone":   {"alice", base64.RawURLEncoding.EncodeToString([]byte("CodeRuntime:acme/ruby"))},
		"an unknown type":          {"alice", base64.RawURLEncoding.EncodeToString([]byte("Run:acme/run_1"))},
		"not base64":               {"alice", "%%%"},
	} {
		r := e.do(tc.user, node, map[string]any{"id": tc.id})
		if len(r.Errors) != 0 || string(r.Data) != `{"node":null}` {
			t.Errorf("%s: data %s, errors %+v; want null and no error", name, r.Data, r.Errors)
		}
	}
}

func TestDomainErrorsCarryCodeRequestIDAndFields(t *testing.T) {
	e := newEnv(t, resolvers.Options{})

	r := e.do("alice", putRuntime, map[string]any{"handle": "acme", "key": "python312", "input": map[string]any{
		"image": "example/python", "digest": "sha256:nothex", "limits": map[string]any{"timeoutSeconds": 0},
	}})
	if r.status != http.StatusOK || string(r.Data) != "null" {
		t.Errorf("status %d, data %s; want 200 and null data", r.status, r.Data)
	}
	got := onlyError(t, r, "validation_failed")
	if !slices.Equal(got.Path, []any{"putCodeRuntime"}) {
		t.Errorf("path = %v", got.Path)
	}
	var fields []string
	for _, f := range got.Extensions["fields"].([]any) {
		f := f.(map[string]any)
		fields = append(fields, f["field"].(string))
		if f["code"] == "" || f["message"] == "" {
			t.Errorf("field error without code or message: %v", f)
		}
	}
	if !slices.Equal(fields, []string{"digest", "limits.timeoutSeconds"}) {
		t.Errorf("fields = %v, want digest and limits.timeoutSeconds", fields)
	}

	// A viewer may read but not write; the role check's error passes through.
	r = e.do("vera", putRuntime, map[string]any{"handle": "acme", "key": "python312", "input": map[string]any{"image": "example/python", "digest": digestA}})
	if e := onlyError(t, r, "forbidden"); !strings.Contains(e.Message, "viewer") {
		t.Errorf("forbidden message %q does not say why", e.Message)
	}

	// No engine is configured in these tests: validation cannot run.
	e.put("alice", "python312", map[string]any{"image": "example/python", "digest": digestA})
	r = e.do("alice", `mutation { validateCodeRuntimeImage(handle: "acme", key: "python312") { key } }`, nil)
	onlyError(t, r, "service_unavailable")
	r = e.do("alice", `mutation { validateCodeRuntimeImage(handle: "acme", key: "ruby") { key } }`, nil)
	onlyError(t, r, "runtime_not_found")
}

func TestInternalErrorsAreLoggedNotShown(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	e.db.Close() // every query now fails inside the store

	r := e.do("alice", `{ handle(handle: "acme") { handle } }`, nil)
	got := onlyError(t, r, "internal")
	if got.Message != "internal error" {
		t.Errorf("message = %q, want only \"internal error\"", got.Message)
	}
	if logs := e.logs.String(); !strings.Contains(logs, r.requestID) || !strings.Contains(logs, "database is closed") {
		t.Errorf("the log does not hold the request id %s and the cause:\n%s", r.requestID, logs)
	}
}

func TestPanicsAreRecoveredAsInternalErrors(t *testing.T) {
	logs := &testenv.LogBuffer{}
	// With no service behind it, the first resolver to call one panics.
	h := resolvers.NewHandler(nil, resolvers.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	srv := httptest.NewServer(withTestEdge(h))
	defer srv.Close()
	e := &env{t: t, srv: srv, endpoint: srv.URL, logs: logs}

	r := e.do("alice", `{ handle(handle: "acme") { handle } }`, nil)
	got := onlyError(t, r, "internal")
	if got.Message != "internal error" || r.status != http.StatusOK || string(r.Data) != `{"handle":null}` {
		t.Errorf("status %d, data %s, error %+v", r.status, r.Data, got)
	}
	if l := logs.String(); !strings.Contains(l, "panic resolving graphql request") || !strings.Contains(l, r.requestID) || !strings.Contains(l, "nil pointer") {
		t.Errorf("the panic was not logged with the request id:\n%s", l)
	}
	if n := strings.Count(logs.String(), r.requestID); n != 1 {
		t.Errorf("the request id appears %d times in the log, want once", n)
	}
}
