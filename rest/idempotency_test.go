package rest_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
)

func withKey(key string) http.Header { return http.Header{"Idempotency-Key": {key}} }

// dailyWritesUsed reads the handle's usage over GraphQL.
func (s *stack) dailyWritesUsed(token, handle string) int {
	s.t.Helper()
	got := s.graphql(token, `query($h: String!) { handle(handle: $h) { usage { dailyWritesUsed } } }`, map[string]any{"h": handle})
	data, _ := got["data"].(map[string]any)
	h, _ := data["handle"].(map[string]any)
	u, _ := h["usage"].(map[string]any)
	n, ok := u["dailyWritesUsed"].(float64)
	if !ok {
		s.t.Fatalf("no usage.dailyWritesUsed in %v", got)
	}
	return int(n)
}

// Many clients retrying one submission at once make one run: each gets that run
// (all but one as a replay) or is told the key is in use.
func TestIdempotentSubmitUnderConcurrency(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newRunStackWith(t, dbURL, 0, 10)
		before := s.dailyWritesUsed(s.tok, "acme")
		body := map[string]any{"runtimeKey": "sh", "code": "echo once"}
		const clients = 50
		answers := make([]response, clients)
		errs := make([]error, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				answers[i], errs[i] = s.send("POST", "/v2/handles/acme/code-runs", s.tok, body, withKey("submit-1"))
			})
		}
		wg.Wait()
		runIDs := map[string]bool{}
		fresh, replayed, inUse := 0, 0, 0
		for i, r := range answers {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			switch r.status {
			case http.StatusAccepted:
				runIDs[r.json(t)["runId"].(string)] = true
				if r.header.Get("Idempotent-Replayed") == "true" {
					replayed++
				} else {
					fresh++
				}
			case http.StatusConflict:
				expectProblem(t, r, http.StatusConflict, "idempotency_key_in_use")
				if r.header.Get("Retry-After") != "1" {
					t.Fatalf("409 with Retry-After %q, want 1", r.header.Get("Retry-After"))
				}
				inUse++
			default:
				t.Fatalf("answer %d: %d %s", i, r.status, r.body)
			}
		}
		if fresh != 1 || len(runIDs) != 1 || fresh+replayed+inUse != clients {
			t.Fatalf("%d fresh, %d replayed, %d in use, %d distinct runs; want 1 fresh and 1 run", fresh, replayed, inUse, len(runIDs))
		}
		t.Logf("%d clients: 1 run, %d replays, %d told in use", clients, replayed, inUse)
		list := s.do("GET", "/v2/handles/acme/code-runs", s.tok, nil).json(t)
		if items := list["items"].([]any); len(items) != 1 || !runIDs[items[0].(map[string]any)["runId"].(string)] {
			t.Fatalf("runs listed: %v; want exactly the one answered", items)
		}
		if got := s.dailyWritesUsed(s.tok, "acme"); got != before+1 {
			t.Fatalf("daily writes used %d, want %d: only the first attempt counts", got, before+1)
		}

		// GraphQL takes the same key: the same submission there is a replay.
		got := s.graphql(s.tok, `mutation { submitCodeRun(handle: "acme", input: {runtimeKey: "sh", code: "echo once"}, idempotencyKey: "submit-1") { runId } }`, nil)
		if data, _ := got["data"].(map[string]any); data == nil || !runIDs[fmt.Sprint(data["submitCodeRun"].(map[string]any)["runId"])] {
			t.Fatalf("GraphQL submission with the key: %v; want the same run", got)
		}

		// The key names that request only: another body or another route is refused.
		other := map[string]any{"runtimeKey": "sh", "code": "echo twice"}
		r, err := s.send("POST", "/v2/handles/acme/code-runs", s.tok, other, withKey("submit-1"))
		if err != nil {
			t.Fatal(err)
		}
		expectProblem(t, r, http.StatusUnprocessableEntity, "idempotency_key_reused")
		for id := range runIDs {
			r, err = s.send("POST", "/v2/handles/acme/code-runs/"+id+"/cancel", s.tok, nil, withKey("submit-1"))
			if err != nil {
				t.Fatal(err)
			}
			expectProblem(t, r, http.StatusUnprocessableEntity, "idempotency_key_reused")
		}
		// Keys are per caller: bob's "submit-1" is a new request.
		s.member("acme", "bob", coderun.RoleDeveloper)
		bob := s.userJWT("bob")
		r, err = s.send("POST", "/v2/handles/acme/code-runs", bob, body, withKey("submit-1"))
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusAccepted || r.header.Get("Idempotent-Replayed") != "" || runIDs[r.json(t)["runId"].(string)] {
			t.Fatalf("bob's submission: %d replayed=%q %s; want a new run", r.status, r.header.Get("Idempotent-Replayed"), r.body)
		}
		if got := s.dailyWritesUsed(s.tok, "acme"); got != before+2 {
			t.Fatalf("daily writes used %d, want %d", got, before+2)
		}
	})
}

// Malformed keys are refused before anything is written.
func TestIdempotencyKeyForm(t *testing.T) {
	s := newStack(t, testenv.SQLiteURL(t), nil)
	s.handle("acme", "alice")
	tok := s.userJWT("alice")
	for _, key := range []string{strings.Repeat("k", 256), "tab\there", "é"} {
		r, err := s.send("PUT", "/v2/handles/acme/code-runtimes/sh", tok, runtimeBody(demoImage, aDigest), withKey(key))
		if err != nil {
			t.Fatal(err)
		}
		p := expectProblem(t, r, http.StatusBadRequest, "invalid_request")
		if fields := fmt.Sprint(p["errors"]); !strings.Contains(fields, "Idempotency-Key") {
			t.Fatalf("key %q: errors %s do not name Idempotency-Key", key, fields)
		}
	}
	r, err := s.send("PUT", "/v2/handles/acme/code-runtimes/sh", tok, runtimeBody(demoImage, aDigest), withKey(strings.Repeat("k", 255)))
	if err != nil || r.status != http.StatusCreated {
		t.Fatalf("a 255-character key: %v %d %s", err, r.status, r.body)
	}
	if got := s.dailyWritesUsed(tok, "acme"); got != 1 {
		t.Fatalf("daily writes used %d, want 1", got)
	}
}

// A handle's writes stop at its daily limit until the next UTC midnight;
// rejected writes and replays cost nothing.
func TestDailyWriteLimit(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		clk := &clock{t: time.Date(2026, 3, 1, 23, 59, 30, 0, time.UTC)} // throttle_test.go
		s := newStackWith(t, dbURL, service.Options{Now: clk.now})
		if _, err := s.svc.CreateHandle(context.Background(), "acme", "alice", 0, 3); err != nil {
			t.Fatal(err)
		}
		tok := s.userJWT("alice")
		put := func(key, idem string, body any) response {
			t.Helper()
			r, err := s.send("PUT", "/v2/handles/acme/code-runtimes/"+key, tok, body, withKey(idem))
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		expectProblem(t, put("a", "bad", map[string]any{"image": demoImage}), http.StatusBadRequest, "validation_failed")
		for _, key := range []string{"a", "b", "c"} {
			if r := put(key, "put-"+key, runtimeBody(demoImage, aDigest)); r.status != http.StatusCreated {
				t.Fatalf("PUT %s: %d %s", key, r.status, r.body)
			}
		}
		// A retry of an accepted write is answered as before, limit or not.
		r := put("a", "put-a", runtimeBody(demoImage, aDigest))
		if r.status != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "true" || r.header.Get("Location") == "" {
			t.Fatalf("replayed PUT: %d replayed=%q Location=%q", r.status, r.header.Get("Idempotent-Replayed"), r.header.Get("Location"))
		}
		refused := put("d", "put-d", runtimeBody(demoImage, aDigest))
		p := expectProblem(t, refused, http.StatusTooManyRequests, "daily_write_limit_reached")
		if p["retryAfter"] != float64(30) {
			t.Fatalf("retryAfter %v, want 30 (seconds to midnight)", p["retryAfter"])
		}
		// The rate-limit headers speak of the limit that refused it.
		if h := refused.header; h.Get("RateLimit-Policy") != `"daily-writes";q=3;w=86400` || h.Get("RateLimit") != `"daily-writes";r=0;t=30` ||
			h.Get("X-RateLimit-Remaining") != "0" || h.Get("X-RateLimit-Reset") != "30" {
			t.Fatalf("headers of the refusal: RateLimit-Policy %q, RateLimit %q, X-RateLimit-Remaining %q, X-RateLimit-Reset %q",
				h.Get("RateLimit-Policy"), h.Get("RateLimit"), h.Get("X-RateLimit-Remaining"), h.Get("X-RateLimit-Reset"))
		}
		if r := put("c", "", runtimeBody(demoImage, aDigest)); r.header.Get("Retry-After") != "30" {
			t.Fatalf("a PUT that changes nothing at the limit: %d, Retry-After %q; want 429 and 30", r.status, r.header.Get("Retry-After"))
		}
		if got := s.dailyWritesUsed(tok, "acme"); got != 3 {
			t.Fatalf("daily writes used %d, want 3", got)
		}

		clk.add(31 * time.Second) // 00:00:01 the next day
		if got := s.dailyWritesUsed(tok, "acme"); got != 0 {
			t.Fatalf("daily writes used after midnight %d, want 0", got)
		}
		if r := put("d", "put-d", runtimeBody(demoImage, aDigest)); r.status != http.StatusCreated {
			t.Fatalf("PUT after midnight: %d %s", r.status, r.body)
		}
		// Replacing with the same body still counts.
		if r := put("d", "", runtimeBody(demoImage, aDigest)); r.status != http.StatusOK {
			t.Fatalf("PUT again: %d %s", r.status, r.body)
		}
		if got := s.dailyWritesUsed(tok, "acme"); got != 2 {
			t.Fatalf("daily writes used %d, want 2", got)
		}

		// Keys are kept a day, then the same key is a new request.
		clk.add(24*time.Hour + time.Second) // 00:00:02 the day after
		if r := put("a", "put-a", runtimeBody(demoImage, aDigest)); r.status != http.StatusOK || r.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("PUT with a day-old key: %d replayed=%q; want a new write (200)", r.status, r.header.Get("Idempotent-Replayed"))
		}
	})
}

// Parallel writes cannot overshoot the daily limit.
func TestDailyWriteLimitUnderConcurrency(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		if _, err := s.svc.CreateHandle(context.Background(), "acme", "alice", 0, 100); err != nil {
			t.Fatal(err)
		}
		tok := s.userJWT("alice")
		const writers = 200
		var accepted, limited atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for i := range writers {
			wg.Go(func() {
				r, err := s.send("PUT", "/v2/handles/acme/code-runtimes/rt-"+strconv.Itoa(i%20), tok, runtimeBody(demoImage, aDigest), withKey("k"+strconv.Itoa(i)))
				switch {
				case err != nil:
					errs <- err
				case r.status == http.StatusOK || r.status == http.StatusCreated:
					accepted.Add(1)
				case r.status == http.StatusTooManyRequests && strings.Contains(string(r.body), "daily_write_limit_reached"):
					limited.Add(1)
				default:
					errs <- fmt.Errorf("PUT: %d %s", r.status, r.body)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if accepted.Load() != 100 || limited.Load() != 100 {
			t.Fatalf("%d accepted, %d limited; want 100 and 100", accepted.Load(), limited.Load())
		}
		if got := s.dailyWritesUsed(tok, "acme"); got != 100 {
			t.Fatalf("daily writes used %d, want 100", got)
		}
	})
}

// gatedChecker is an image check that waits at a gate: a write in flight for
// as long as a test needs.
type gatedChecker struct {
	entered chan struct{}
	gate    chan struct{}
}

func (g gatedChecker) CheckImage(ctx context.Context, image, digest string) (string, *coderun.ErrorDetail, error) {
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
	return digest, nil, nil
}

// A retry made while the first attempt is still in flight is told so (409,
// Retry-After: 1) and writes nothing; once the first is answered, a retry
// gets that answer. A write that fails keeps no answer: its key is free again.
func TestIdempotencyKeyInFlight(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		g := gatedChecker{entered: make(chan struct{}, 4), gate: make(chan struct{})}
		s := newStack(t, dbURL, g)
		s.handle("acme", "alice")
		tok := s.userJWT("alice")
		if r := s.do("PUT", "/v2/handles/acme/code-runtimes/sh", tok, runtimeBody("busybox", aDigest)); r.status != http.StatusCreated {
			t.Fatalf("put: %d %s", r.status, r.body)
		}
		// A write that fails keeps nothing under its key.
		submit := map[string]any{"runtimeKey": "sh", "code": "echo hi"}
		r, err := s.send("POST", "/v2/handles/acme/code-runs", tok, submit, withKey("run-1"))
		if err != nil {
			t.Fatal(err)
		}
		expectProblem(t, r, http.StatusConflict, "runtime_not_validated")

		validate := "/v2/handles/acme/code-runtimes/sh/validate-image"
		firstDone := make(chan response, 1)
		go func() {
			r, err := s.send("POST", validate, tok, nil, withKey("check-1"))
			if err != nil {
				t.Error(err)
			}
			firstDone <- r
		}()
		<-g.entered // the first attempt is checking the image

		r, err = s.send("POST", validate, tok, nil, withKey("check-1"))
		if err != nil {
			t.Fatal(err)
		}
		expectProblem(t, r, http.StatusConflict, "idempotency_key_in_use")
		if r.header.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q, want 1", r.header.Get("Retry-After"))
		}
		// Another request with the key is refused as such even in flight.
		r, err = s.send("PUT", "/v2/handles/acme/code-runtimes/sh", tok, runtimeBody("busybox", aDigest), withKey("check-1"))
		if err != nil {
			t.Fatal(err)
		}
		expectProblem(t, r, http.StatusUnprocessableEntity, "idempotency_key_reused")
		select {
		case <-g.entered:
			t.Fatal("a retry in flight checked the image again")
		default:
		}

		close(g.gate)
		first := <-firstDone
		if first.status != http.StatusOK || first.json(t)["validation"].(map[string]any)["status"] != "validated" {
			t.Fatalf("first attempt: %d %s", first.status, first.body)
		}
		r, err = s.send("POST", validate, tok, nil, withKey("check-1"))
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusOK || r.header.Get("Idempotent-Replayed") != "true" || string(r.body) != string(first.body) {
			t.Fatalf("retry after: %d replayed=%q\n%s\nwant\n%s", r.status, r.header.Get("Idempotent-Replayed"), r.body, first.body)
		}

		// The submission that failed before is made afresh now it can succeed.
		r, err = s.send("POST", "/v2/handles/acme/code-runs", tok, submit, withKey("run-1"))
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusAccepted || r.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("submission after the failed one: %d replayed=%q %s", r.status, r.header.Get("Idempotent-Replayed"), r.body)
		}
	})
}

// Image checks are the costly writes: a handle checks at most two images at
// once (a third is 429 rate_limited until one is done), and a handle out of
// writes for today is refused before its image is checked at all.
func TestImageChecksAreBounded(t *testing.T) {
	g := gatedChecker{entered: make(chan struct{}, 4), gate: make(chan struct{})}
	s := newStack(t, testenv.SQLiteURL(t), g)
	if _, err := s.svc.CreateHandle(context.Background(), "acme", "alice", 0, 5); err != nil {
		t.Fatal(err)
	}
	tok := s.userJWT("alice")
	for _, key := range []string{"a", "b", "c"} {
		if r := s.do("PUT", "/v2/handles/acme/code-runtimes/"+key, tok, runtimeBody("busybox", aDigest)); r.status != http.StatusCreated {
			t.Fatalf("put %s: %d %s", key, r.status, r.body)
		}
	}
	validate := func(key string) response {
		return s.do("POST", "/v2/handles/acme/code-runtimes/"+key+"/validate-image", tok, nil)
	}
	done := make(chan response, 2)
	for _, key := range []string{"a", "b"} {
		go func() { done <- validate(key) }()
		<-g.entered
	}
	third := validate("c")
	r := expectProblem(t, third, http.StatusTooManyRequests, "rate_limited")
	if r["retryAfter"] != float64(5) || third.header.Get("Retry-After") != "5" {
		t.Errorf("retryAfter %v, Retry-After %q; want 5", r["retryAfter"], third.header.Get("Retry-After"))
	}
	if h := third.header; h.Get("RateLimit-Policy") != `"image-checks";q=2;qu="concurrent-requests"` || h.Get("RateLimit") != `"image-checks";r=0;t=5` {
		t.Errorf("headers of the refusal: RateLimit-Policy %q, RateLimit %q", h.Get("RateLimit-Policy"), h.Get("RateLimit"))
	}
	close(g.gate)
	for range 2 {
		if r := <-done; r.status != http.StatusOK {
			t.Fatalf("a check: %d %s", r.status, r.body)
		}
	}
	// Three PUTs and two checks: the day's five writes are made.
	expectProblem(t, validate("c"), http.StatusTooManyRequests, "daily_write_limit_reached")
	select {
	case <-g.entered:
		t.Fatal("an image was checked for a handle out of writes")
	default:
	}
	if got := s.dailyWritesUsed(tok, "acme"); got != 5 {
		t.Fatalf("daily writes used %d, want 5", got)
	}
}
