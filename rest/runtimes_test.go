package rest_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestPutRuntime(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		s.handle("acme", "alice")
		tok := s.userJWT("alice")
		const path = "/v2/handles/acme/code-runtimes/python312"

		t.Run("create, then every omitted field takes its default", func(t *testing.T) {
			r := s.do("PUT", path, tok, map[string]any{
				"image": "127.0.0.1:5000/qa/python:3.12", "digest": aDigest,
				"command": []string{"python3", "main.py"}, "entrypointFile": "main.py",
				"limits":      map[string]any{"timeoutSeconds": 10, "memoryMiB": 128},
				"description": "QA scripts",
			})
			if r.status != http.StatusCreated {
				t.Fatalf("create: %d %s", r.status, r.body)
			}
			if r.header.Get("Location") != path {
				t.Fatalf("Location %q", r.header.Get("Location"))
			}
			rt := r.json(t)
			limits := rt["limits"].(map[string]any)
			if limits["timeoutSeconds"] != 10.0 || limits["memoryMiB"] != 128.0 || limits["cpus"] != 1.0 ||
				limits["pids"] != 64.0 || limits["outputBytes"] != float64(1<<20) {
				t.Fatalf("limits %v", limits)
			}
			v := rt["validation"].(map[string]any)
			if v["status"] != "pending" || v["checkedAt"] != nil || v["resolvedDigest"] != nil || v["error"] != nil {
				t.Fatalf("validation %v", v)
			}
			if rt["handle"] != "acme" || rt["runtimeKey"] != "python312" || rt["network"] != false {
				t.Fatalf("runtime %v", rt)
			}

			r = s.do("PUT", path, tok, runtimeBody("127.0.0.1:5000/qa/python:3.12", aDigest))
			if r.status != http.StatusOK {
				t.Fatalf("replace: %d %s", r.status, r.body)
			}
			rt2 := r.json(t)
			if rt2["description"] != "" || rt2["entrypointFile"] != "main" || len(rt2["command"].([]any)) != 0 {
				t.Fatalf("a replaced runtime keeps old values: %v", rt2)
			}
			if rt2["createdAt"] != rt["createdAt"] {
				t.Fatalf("createdAt changed: %v → %v", rt["createdAt"], rt2["createdAt"])
			}
			got := s.do("GET", path, tok, nil)
			if got.status != 200 || string(got.body) != string(r.body) {
				t.Fatalf("GET differs from PUT's answer:\n%s\n%s", got.body, r.body)
			}
		})

		t.Run("every invalid field is named", func(t *testing.T) {
			r := s.do("PUT", path, tok, map[string]any{
				"image": "", "digest": "sha256:nothex", "entrypointFile": "../etc/passwd", "network": true,
				"limits": map[string]any{"timeoutSeconds": 901, "memoryMiB": 8, "cpus": 0.01, "pids": 5000, "outputBytes": 10},
			})
			p := expectProblem(t, r, 400, "validation_failed")
			var fields []string
			for _, e := range p["errors"].([]any) {
				e := e.(map[string]any)
				if e["code"] == "" || e["message"] == "" {
					t.Fatalf("field error without code or message: %v", e)
				}
				fields = append(fields, e["field"].(string))
			}
			want := "image digest entrypointFile network limits.timeoutSeconds limits.memoryMiB limits.cpus limits.pids limits.outputBytes"
			if strings.Join(fields, " ") != want {
				t.Fatalf("fields %v, want %s", fields, want)
			}
			// Nothing was written: the runtime is as the last good PUT left it.
			if rt := s.do("GET", path, tok, nil).json(t); rt["image"] != "127.0.0.1:5000/qa/python:3.12" {
				t.Fatalf("a rejected PUT changed the runtime: %v", rt)
			}
		})

		t.Run("a bad runtime key is a validation failure", func(t *testing.T) {
			p := expectProblem(t, s.do("PUT", "/v2/handles/acme/code-runtimes/Bad_Key", tok, runtimeBody("x", aDigest)), 400, "validation_failed")
			if e := p["errors"].([]any)[0].(map[string]any); e["field"] != "runtimeKey" {
				t.Fatalf("errors %v", p["errors"])
			}
		})

		t.Run("unknown fields and malformed JSON are invalid requests", func(t *testing.T) {
			expectProblem(t, s.do("PUT", path, tok, `{"image":"x","digest":"`+aDigest+`","colour":"red"}`), 400, "invalid_request")
			expectProblem(t, s.do("PUT", path, tok, `{"image":`), 400, "invalid_request")
			expectProblem(t, s.do("PUT", path, tok, `{"image":"x"} {}`), 400, "invalid_request")
			p := expectProblem(t, s.do("PUT", path, tok, `{"image":"x","digest":"`+aDigest+`","limits":{"pids":"many"}}`), 400, "invalid_request")
			if !strings.Contains(p["detail"].(string), "pids") {
				t.Fatalf("detail does not name the field: %v", p["detail"])
			}
		})

		t.Run("a body over the limit is refused", func(t *testing.T) {
			big := fmt.Sprintf(`{"image":"x","digest":"%s","description":"%s"}`, aDigest, strings.Repeat("a", 70<<10))
			expectProblem(t, s.do("PUT", path, tok, big), 413, "payload_too_large")
		})

		t.Run("unknown runtime", func(t *testing.T) {
			expectProblem(t, s.do("GET", "/v2/handles/acme/code-runtimes/nope", tok, nil), 404, "runtime_not_found")
			expectProblem(t, s.do("POST", "/v2/handles/acme/code-runtimes/nope/validate-image", tok, nil), 404, "runtime_not_found")
		})
	})
}

func TestListRuntimesPages(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newStack(t, dbURL, nil)
		s.handle("acme", "alice")
		tok := s.userJWT("alice")
		for i := 7; i >= 1; i-- {
			if r := s.do("PUT", fmt.Sprintf("/v2/handles/acme/code-runtimes/rt%d", i), tok, runtimeBody("x", aDigest)); r.status != 201 {
				t.Fatalf("PUT: %d %s", r.status, r.body)
			}
		}
		var keys []string
		cursor := ""
		pages := 0
		for {
			path := "/v2/handles/acme/code-runtimes?limit=3"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := s.do("GET", path, tok, nil)
			if r.status != 200 {
				t.Fatalf("list: %d %s", r.status, r.body)
			}
			page := r.json(t)
			pages++
			for _, it := range page["items"].([]any) {
				keys = append(keys, it.(map[string]any)["runtimeKey"].(string))
			}
			next, ok := page["nextCursor"].(string)
			if !ok {
				if page["nextCursor"] != nil {
					t.Fatalf("nextCursor %v", page["nextCursor"])
				}
				break
			}
			cursor = next
		}
		if got := strings.Join(keys, ","); got != "rt1,rt2,rt3,rt4,rt5,rt6,rt7" || pages != 3 {
			t.Fatalf("keys %s in %d pages", got, pages)
		}
		expectProblem(t, s.do("GET", "/v2/handles/acme/code-runtimes?limit=0", tok, nil), 400, "validation_failed")
		expectProblem(t, s.do("GET", "/v2/handles/acme/code-runtimes?limit=101", tok, nil), 400, "validation_failed")
		expectProblem(t, s.do("GET", "/v2/handles/acme/code-runtimes?cursor=!!", tok, nil), 400, "validation_failed")
	})
}
