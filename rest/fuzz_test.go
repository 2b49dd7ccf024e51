package rest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// fuzzServer is the HTTP handler over a real SQLite database with a handle
// "acme" and a validated-looking runtime "sh", and alice's token.
func fuzzServer(f *testing.F) (http.Handler, string) {
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite://"+f.TempDir()+"/db")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		f.Fatal(err)
	}
	svc := service.New(db, service.Options{Logger: quietLog})
	// The requests served are written before the database closes.
	f.Cleanup(func() { svc.FlushRequests(context.Background()) })
	if _, err := svc.CreateHandle(ctx, "acme", "alice", 1<<20, 0); err != nil {
		f.Fatal(err)
	}
	digest := aDigest
	if err := db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.PutRuntime(ctx, coderun.Runtime{Handle: "acme", Key: "sh", Image: "x", Digest: digest, Command: []string{"sh"},
			EntrypointFile: "main.sh", Limits: coderun.DefaultLimits,
			Validation: coderun.Validation{Status: coderun.ValidationValidated, ResolvedDigest: &digest}})
		return err
	}); err != nil {
		f.Fatal(err)
	}
	secret := []byte(strings.Repeat("s", 32))
	token, err := auth.SignHS256(secret, issuer, audience, "alice", nil, time.Hour*24*365, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	authn := auth.NewAuthenticator(auth.JWTConfig{HS256Secret: secret, Issuer: issuer, Audience: audience}, svc, nil)
	return rest.New(rest.Options{Service: svc, Authenticator: authn, Logger: quietLog, Throttles: &unthrottled, MaxBodyBytes: 64 << 10}), token
}

// serveFuzz sends one request and fails on a server error: whatever the body,
// the answer is a success or a problem the caller caused.
func serveFuzz(t *testing.T, h http.Handler, token, method, path, body string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s with %q: %d %s", method, path, body, rec.Code, rec.Body)
	}
	if rec.Code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%d without a problem document: %s", rec.Code, rec.Body)
	}
}

func FuzzPutRuntime(f *testing.F) {
	h, token := fuzzServer(f)
	for _, seed := range []string{
		`{"image":"127.0.0.1:5000/qa/python:3.12","digest":"` + aDigest + `","command":["python3","main.py"],"entrypointFile":"main.py","limits":{"timeoutSeconds":30,"memoryMiB":256,"cpus":1.0,"pids":64,"outputBytes":1048576},"network":false,"description":"QA"}`,
		`{"image":"x","digest":"` + aDigest + `","limits":{"cpus":1e308,"pids":-1,"outputBytes":99999999999999999999}}`,
		`{"image":"x","digest":"sha256:","entrypointFile":"../../etc/passwd","command":["",""]}`,
		`{"image":"\u0000","digest":null,"limits":null,"network":"yes"}`,
		`[]`, `null`, `{"image":`, `{"image":"x"}{"image":"y"}`,
	} {
		f.Add("sh", seed)
	}
	f.Add("Bad_Key", `{}`)
	f.Fuzz(func(t *testing.T, key, body string) {
		serveFuzz(t, h, token, "PUT", "/v2/handles/acme/code-runtimes/"+pathSegment(key), body)
	})
}

func FuzzSubmitRun(f *testing.F) {
	h, token := fuzzServer(f)
	for _, seed := range []string{
		`{"runtimeKey":"sh","code":"print('hi')","files":[{"path":"lib/util.py","content":"eA==","encoding":"base64"}],"stdin":"x","args":["--x"],"env":{"CAMPAIGN":"spring"},"timeoutSeconds":10,"labels":{"campaign":"spring"}}`,
		`{"runtimeKey":"sh","files":[{"path":"/abs","content":"x","encoding":"rot13"},{"path":"a/../../b","content":"%%%","encoding":"base64"}]}`,
		`{"runtimeKey":"sh","code":"x","env":{"1BAD":"v","OK":"\u0000"},"labels":{"UPPER":"x"},"timeoutSeconds":-5}`,
		`{"runtimeKey":"nope","code":""}`, `{"runtimeKey":"sh","code":"x","args":[null]}`, `{}`, `"string"`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		serveFuzz(t, h, token, "POST", "/v2/handles/acme/code-runs", body)
	})
}

// pathSegment makes s usable as one path segment of a test request.
func pathSegment(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r > ' ' && r < 0x7f && !strings.ContainsRune("/?#%", r) {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "k"
	}
	return b.String()
}

// FuzzReportSupportIssue fuzzes a support report's body and its
// Idempotency-Key: no answer is a server error, a malformed key is always a
// 400, and a well-formed key with a good body files (or replays) a report, or
// meets the daily cap.
func FuzzReportSupportIssue(f *testing.F) {
	h, token := fuzzServer(f)
	for _, seed := range [][2]string{
		{"rpt-1", `{"summary":"it broke","details":"see request","handle":"acme","sessionId":"s1","requestId":"req_01JD0000000000000000000000","reproArtifact":"x"}`},
		{"", `{"summary":"","details":"","handle":""}`},
		{"k\x00ey", `{"summary":"\u0000","details":null}`},
		{strings.Repeat("k", 256), `{"summary":"s","details":"d","requestId":"req_../../etc"}`},
		{"ключ", `{"summary":"s","details":"d","extra":true}`},
		{" ", `[]`},
	} {
		f.Add(seed[0], seed[1])
	}
	good := `{"summary":"s","details":"d"}`
	f.Fuzz(func(t *testing.T, key, body string) {
		valid := len(key) <= 255
		for i := 0; i < len(key); i++ {
			valid = valid && key[i] >= 0x20 && key[i] < 0x7f
		}
		for _, b := range []string{body, good} {
			req := httptest.NewRequest("POST", "/v2/support/report", strings.NewReader(b))
			req.Header.Set("Authorization", "Bearer "+token)
			if key != "" {
				req.Header["Idempotency-Key"] = []string{key}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch {
			case rec.Code >= 500:
				t.Fatalf("key %q body %q: %d %s", key, b, rec.Code, rec.Body)
			case !valid && rec.Code != http.StatusBadRequest:
				t.Fatalf("malformed key %q: %d %s", key, rec.Code, rec.Body)
			case valid && b == good && rec.Code != http.StatusCreated && rec.Code != http.StatusTooManyRequests &&
				!(rec.Code == http.StatusUnprocessableEntity && strings.Contains(rec.Body.String(), "idempotency_key_reused")):
				t.Fatalf("key %q, good body: %d %s", key, rec.Code, rec.Body)
			}
		}
	})
}
