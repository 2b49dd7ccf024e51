package web_test

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gharart/coderun/web"
)

func get(t *testing.T, method, host string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, "/viewer?handle=acme&run=run_1", nil)
	if host != "" {
		req.Host = host
	}
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	web.Handler().ServeHTTP(rec, req)
	return rec.Result()
}

func TestPageIsSelfContainedUnderAStrictPolicy(t *testing.T) {
	res := get(t, "GET", "coderun.example:8080", nil)
	body, _ := io.ReadAll(res.Body)
	page := string(body)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	for k, want := range map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-cache",
		"Referrer-Policy":        "no-referrer",
		"X-Frame-Options":        "DENY",
	} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}

	csp := directives(res.Header.Get("Content-Security-Policy"))
	if csp["default-src"] != "'none'" || csp["frame-ancestors"] != "'none'" || csp["base-uri"] != "'none'" {
		t.Errorf("policy %v: want default-src, frame-ancestors and base-uri 'none'", csp)
	}
	if got, want := csp["connect-src"], "'self' ws://coderun.example:8080 wss://coderun.example:8080"; got != want {
		t.Errorf("connect-src %q, want %q", got, want)
	}
	// The browser runs the inline code only if it hashes to the policy's value.
	for element, directive := range map[string]string{"script": "script-src", "style": "style-src"} {
		m := regexp.MustCompile(`(?s)<`+element+`>(.*?)</`+element+`>`).FindAllStringSubmatch(page, -1)
		if len(m) != 1 || len(m[0][1]) < 100 {
			t.Fatalf("want one inline <%s> with the code in it, found %d", element, len(m))
		}
		sum := sha256.Sum256([]byte(m[0][1]))
		if want := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; csp[directive] != want {
			t.Errorf("%s %q, want %q (the hash of the inline %s)", directive, csp[directive], want, element)
		}
	}
	if strings.Contains(page, "'unsafe-inline'") || strings.Contains(res.Header.Get("Content-Security-Policy"), "unsafe") {
		t.Error("the policy must not allow unsafe code")
	}
	// Nothing is fetched from elsewhere: no external scripts, styles, fonts or images.
	if ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import`).FindString(page); ext != "" {
		t.Errorf("the page refers to an external asset: %q", ext)
	}
	// The token lives in session storage only.
	if strings.Contains(page, "localStorage") {
		t.Error("the page uses localStorage")
	}
}

func TestForgedHostCannotWidenThePolicy(t *testing.T) {
	res := get(t, "GET", "evil.example; script-src *", nil)
	csp := res.Header.Get("Content-Security-Policy")
	if strings.Contains(csp, "evil") || strings.Contains(csp, "script-src *") {
		t.Fatalf("policy %q took in the Host header", csp)
	}
	if directives(csp)["connect-src"] != "'self'" {
		t.Fatalf("policy %q: want connect-src 'self' alone", csp)
	}
}

func TestPageRevalidatesByETag(t *testing.T) {
	first := get(t, "GET", "", nil)
	etag := first.Header.Get("ETag")
	if !regexp.MustCompile(`^"[0-9a-f]{32}"$`).MatchString(etag) {
		t.Fatalf("ETag %q", etag)
	}
	again := get(t, "GET", "", http.Header{"If-None-Match": {etag}})
	if again.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag: %d, want 304", again.StatusCode)
	}
	if stale := get(t, "GET", "", http.Header{"If-None-Match": {`"0123"`}}); stale.StatusCode != 200 {
		t.Fatalf("a stale ETag: %d, want 200", stale.StatusCode)
	}
}

func TestOnlyGETAndHEAD(t *testing.T) {
	if res := get(t, "HEAD", "", nil); res.StatusCode != 200 {
		t.Fatalf("HEAD: %d", res.StatusCode)
	}
	res := get(t, "POST", "", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
}

// directives splits a Content-Security-Policy into its directives.
func directives(policy string) map[string]string {
	m := map[string]string{}
	for _, d := range strings.Split(policy, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		m[name] = value
	}
	return m
}
