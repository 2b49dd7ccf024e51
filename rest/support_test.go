package rest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
)

// reportsOf lists the caller's reports over REST.
func (s *stack) reportsOf(token string) []map[string]any {
	s.t.Helper()
	r := s.do("GET", "/v2/support/reports", token, nil)
	if r.status != http.StatusOK {
		s.t.Fatalf("list reports: %d %s", r.status, r.body)
	}
	var out []map[string]any
	for _, it := range r.json(s.t)["items"].([]any) {
		out = append(out, it.(map[string]any))
	}
	return out
}

// A user files a report citing a request they were just answered; a request
// or handle of another tenant is refused, never attached; reports are listed
// to their reporter only.
func TestSupportReports(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		s.handle("acme", "alice")
		s.handle("globex", "gus")
		alice, gus := s.userJWT("alice"), s.userJWT("gus")

		// A request alice was answered a moment ago can be cited at once.
		failed := s.do("GET", "/v2/handles/acme/code-runtimes/nope", alice, nil)
		expectProblem(t, failed, http.StatusNotFound, "runtime_not_found")
		cited := failed.header.Get("X-Request-Id")
		before := s.dailyWritesUsed(alice, "acme")
		body := map[string]any{"summary": "runtime lookup fails", "details": "GET says not found\nbut I made it",
			"handle": "acme", "sessionId": "sess-42", "requestId": cited, "reproArtifact": "curl -s …"}
		r := s.do("POST", "/v2/support/report", alice, body)
		if r.status != http.StatusCreated {
			t.Fatalf("report: %d %s", r.status, r.body)
		}
		receipt := r.json(t)
		id, _ := receipt["reportId"].(string)
		if !strings.HasPrefix(id, "rpt_") || receipt["status"] != "received" || receipt["createdAt"] == nil || len(receipt) != 3 {
			t.Fatalf("receipt %v; want reportId rpt_…, status received, createdAt", receipt)
		}
		if got := s.dailyWritesUsed(alice, "acme"); got != before+1 {
			t.Fatalf("daily writes of acme %d, want %d: a report naming a handle is one of its writes", got, before+1)
		}

		// Another tenant's request, or a handle alice is not in, is not found.
		theirs := s.do("GET", "/v2/handles/globex/code-runtimes", gus, nil).header.Get("X-Request-Id")
		for _, tc := range []struct {
			field, value, code string
		}{
			{"requestId", theirs, "request_not_found"},
			{"requestId", "req_" + ulid.Make().String(), "request_not_found"},
			{"handle", "globex", "handle_not_found"},
			{"handle", "nowhere", "handle_not_found"},
		} {
			bad := map[string]any{"summary": "s", "details": "d", tc.field: tc.value}
			p := expectProblem(t, s.do("POST", "/v2/support/report", alice, bad), http.StatusNotFound, tc.code)
			if strings.Contains(fmt.Sprint(p), "gus") {
				t.Fatalf("the refusal tells of another tenant: %v", p)
			}
		}

		// Fields past their limits are named; nothing is filed.
		for field, value := range map[string]any{
			"summary":   strings.Repeat("é", coderun.MaxReportSummary+1),
			"details":   strings.Repeat("x", coderun.MaxReportDetails+1),
			"requestId": "not-a-request-id",
			"sessionId": "",
		} {
			bad := map[string]any{"summary": "s", "details": "d", field: value}
			p := expectProblem(t, s.do("POST", "/v2/support/report", alice, bad), http.StatusBadRequest, "validation_failed")
			if errs, _ := p["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["field"] != field {
				t.Fatalf("%s: errors %v, want one naming %s", field, p["errors"], field)
			}
		}
		expectProblem(t, s.do("POST", "/v2/support/report", alice, map[string]any{"summary": "s"}), http.StatusBadRequest, "validation_failed")
		expectProblem(t, s.do("POST", "/v2/support/report", alice, map[string]any{"summary": "s", "details": "d", "extra": 1}), http.StatusBadRequest, "invalid_request")

		// support:write is needed; any signed-in user (no handle) may file.
		noScope := s.pat("alice", "acme", coderun.ScopeRunsRead)
		expectProblem(t, s.do("POST", "/v2/support/report", noScope, map[string]any{"summary": "s", "details": "d"}), http.StatusForbidden, "insufficient_scope")
		expectProblem(t, s.do("GET", "/v2/support/reports", noScope, nil), http.StatusForbidden, "insufficient_scope")
		expectProblem(t, s.do("POST", "/v2/support/report", "", map[string]any{"summary": "s", "details": "d"}), http.StatusUnauthorized, "unauthenticated")
		stranger := s.userJWT("sam")
		if r := s.do("POST", "/v2/support/report", stranger, map[string]any{"summary": "cannot sign up", "details": "…"}); r.status != http.StatusCreated {
			t.Fatalf("a user with no handle: %d %s", r.status, r.body)
		}

		// A retry with the key gets the same report; the handle is charged once.
		used := s.dailyWritesUsed(alice, "acme")
		again := map[string]any{"summary": "retry me", "details": "d", "handle": "acme"}
		first, err := s.send("POST", "/v2/support/report", alice, again, withKey("rpt-1"))
		if err != nil {
			t.Fatal(err)
		}
		second, err := s.send("POST", "/v2/support/report", alice, again, withKey("rpt-1"))
		if err != nil {
			t.Fatal(err)
		}
		if second.status != http.StatusCreated || second.header.Get("Idempotent-Replayed") != "true" || second.json(t)["reportId"] != first.json(t)["reportId"] {
			t.Fatalf("retry: %d replayed=%q %s; first %s", second.status, second.header.Get("Idempotent-Replayed"), second.body, first.body)
		}
		if got := s.dailyWritesUsed(alice, "acme"); got != used+1 {
			t.Fatalf("daily writes %d, want %d", got, used+1)
		}

		// Each reporter lists their own, newest first, with what they cited.
		mine := s.reportsOf(alice)
		if len(mine) != 2 || mine[0]["summary"] != "retry me" || mine[1]["reportId"] != id {
			t.Fatalf("alice's reports: %v", mine)
		}
		if got := mine[1]; got["requestId"] != cited || got["handle"] != "acme" || got["sessionId"] != "sess-42" ||
			got["reproArtifactBytes"] != float64(len("curl -s …")) || got["details"] != body["details"] {
			t.Fatalf("alice's first report: %v", got)
		}
		if theirs := s.reportsOf(gus); len(theirs) != 0 {
			t.Fatalf("gus sees %v", theirs)
		}

		// GraphQL files and lists the same reports, with the same checks.
		got := s.graphql(alice, `mutation($in: SupportReportInput!) { reportSupportIssue(input: $in) { reportId status requestId } }`,
			map[string]any{"in": map[string]any{"summary": "from the dashboard", "details": "d", "requestId": theirs}})
		if errs, _ := got["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["extensions"].(map[string]any)["code"] != "request_not_found" {
			t.Fatalf("citing gus's request over GraphQL: %v", got)
		}
		got = s.graphql(alice, `mutation($in: SupportReportInput!) { reportSupportIssue(input: $in) { reportId status requestId } }`,
			map[string]any{"in": map[string]any{"summary": "from the dashboard", "details": "d", "requestId": cited}})
		filed, _ := got["data"].(map[string]any)["reportSupportIssue"].(map[string]any)
		if filed["status"] != "RECEIVED" || filed["requestId"] != cited {
			t.Fatalf("GraphQL report: %v", got)
		}
		got = s.graphql(alice, `{ viewer { userId supportReports(first: 2) { edges { node { reportId summary reproArtifactBytes } } pageInfo { hasNextPage } } } }`, nil)
		viewer := got["data"].(map[string]any)["viewer"].(map[string]any)
		conn := viewer["supportReports"].(map[string]any)
		edges := conn["edges"].([]any)
		if viewer["userId"] != "alice" || len(edges) != 2 || edges[0].(map[string]any)["node"].(map[string]any)["reportId"] != filed["reportId"] ||
			conn["pageInfo"].(map[string]any)["hasNextPage"] != true {
			t.Fatalf("viewer: %v", got)
		}
	})
}

// The artifact may be 64 KiB and not a byte more (checked in the service:
// the test server's body limit is 64 KiB itself).
func TestSupportReportArtifactLimit(t *testing.T) {
	s := newStack(t, "sqlite://"+t.TempDir()+"/db", nil)
	ctx := coderun.NewContextWithPrincipal(context.Background(), &coderun.Principal{UserID: "alice", Kind: coderun.TokenJWT, Scopes: coderun.AllScopes})
	at := strings.Repeat("a", coderun.MaxReportArtifact)
	if _, _, err := s.svc.ReportSupportIssue(ctx, coderun.SupportReportInput{Summary: "s", Details: "d", ReproArtifact: &at}, ""); err != nil {
		t.Fatalf("64 KiB artifact: %v", err)
	}
	over := at + "a"
	_, _, err := s.svc.ReportSupportIssue(ctx, coderun.SupportReportInput{Summary: "s", Details: "d", ReproArtifact: &over}, "")
	if e := coderun.AsError(err); e == nil || e.Code != coderun.EValidationFailed || e.Fields[0].Field != "reproArtifact" {
		t.Fatalf("64 KiB + 1: %v", err)
	}
	page, err := s.svc.ListSupportReports(ctx, "", 0)
	if err != nil || len(page.Items) != 1 || page.Items[0].ReproArtifactBytes != coderun.MaxReportArtifact {
		t.Fatalf("stored: %d reports, %v", len(page.Items), err)
	}
}

// A user's reports, with a handle or without, are capped per UTC day,
// exactly, even when filed at once.
func TestReportsAreCapped(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		s.handle("acme", "alice")
		s.member("acme", "sam", coderun.RoleViewer)
		tok := s.userJWT("sam")
		const tries = service.MaxDailyReports + 10
		statuses := make([]int, tries)
		done := make(chan struct{})
		for i := range tries {
			go func() {
				defer func() { done <- struct{}{} }()
				body := map[string]any{"summary": fmt.Sprint("report ", i), "details": "d"}
				if i%2 == 0 {
					body["handle"] = "acme"
				}
				r, err := s.send("POST", "/v2/support/report", tok, body, nil)
				if err != nil {
					t.Error(err)
					return
				}
				statuses[i] = r.status
				if r.status == http.StatusTooManyRequests {
					expectProblem(t, r, http.StatusTooManyRequests, "daily_write_limit_reached")
					if !strings.HasPrefix(r.header.Get("RateLimit-Policy"), `"daily-reports";q=50;w=86400`) {
						t.Errorf("RateLimit-Policy of a refused report: %q", r.header.Get("RateLimit-Policy"))
					}
				}
			}()
		}
		for range tries {
			<-done
		}
		filed := 0
		for _, st := range statuses {
			if st == http.StatusCreated {
				filed++
			}
		}
		if filed != service.MaxDailyReports {
			t.Fatalf("%d of %d filed, want exactly %d; statuses %v", filed, tries, service.MaxDailyReports, statuses)
		}
	})
}

// Support follows a request id through the log: every request's line names
// it with its route, caller and handle, GraphQL operations included.
func TestRequestIDsAreInTheLog(t *testing.T) {
	var logs testenv.LogBuffer
	s := newStackWith(t, "sqlite://"+t.TempDir()+"/db", service.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	s.handle("acme", "alice")
	tok := s.userJWT("alice")
	restID := s.do("GET", "/v2/handles/acme/code-runtimes", tok, nil).header.Get("X-Request-Id")
	gql := s.do("POST", "/graphql", tok, map[string]any{"query": `{ handle(handle: "acme") { handle } }`})
	gqlID := gql.header.Get("X-Request-Id")
	anonID := s.do("GET", "/v2/handles/acme/code-runtimes", "", nil).header.Get("X-Request-Id")
	want := map[string][3]string{ // request id → route, handle, user
		restID: {"GET /v2/handles/{handle}/code-runtimes", "acme", "alice"},
		gqlID:  {"/graphql", "acme", "alice"},
		anonID: {"GET /v2/handles/{handle}/code-runtimes", "acme", ""},
	}
	found := map[string]bool{}
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		id, _ := rec["request_id"].(string)
		w, ok := want[id]
		if !ok || rec["msg"] != "request" {
			continue
		}
		found[id] = true
		if rec["route"] != w[0] || rec["handle"] != w[1] || fmt.Sprint(rec["user"]) != w[2] && w[2] != "" {
			t.Errorf("log of %s: route %v handle %v user %v; want %v", id, rec["route"], rec["handle"], rec["user"], w)
		}
	}
	if len(found) != len(want) {
		t.Fatalf("found %d of %d request ids in the log:\n%s", len(found), len(want), logs.String())
	}
}

// A request answered by one process can be cited at once through another:
// the second waits out the first's batch of requests.
func TestCitingARequestAnsweredElsewhere(t *testing.T) {
	url := testenv.PostgresURL(t)
	a, b := newStack(t, url, nil), newStack(t, url, nil)
	a.handle("acme", "alice")
	tok := a.userJWT("alice")
	id := a.do("GET", "/v2/handles/acme/code-runtimes", tok, nil).header.Get("X-Request-Id")
	r := b.do("POST", "/v2/support/report", tok, map[string]any{"summary": "s", "details": "d", "requestId": id})
	if r.status != http.StatusCreated {
		t.Fatalf("citing a request the other process answered: %d %s", r.status, r.body)
	}
}
