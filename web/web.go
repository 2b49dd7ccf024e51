// Package web is the embedded live-viewer page: one self-contained page that
// follows a run's status and output over GraphQL subscriptions, with no build
// step and no external assets.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

var (
	//go:embed viewer.html
	pageTemplate string
	//go:embed viewer.css
	stylesheet string
	//go:embed viewer.js
	script string
)

// page is the viewer with its stylesheet and script inlined: the page is
// mounted at one path, and inline code allowed by hash keeps the
// Content-Security-Policy strict without a second route.
var page = strings.NewReplacer(
	"/*STYLE*/", stylesheet,
	"/*SCRIPT*/", script,
).Replace(pageTemplate)

// Handler serves the viewer page. It ignores the path: the caller mounts it
// (rest mounts it at GET /viewer); the page reads handle and run from the
// query string and asks for a token itself.
func Handler() http.Handler {
	content := []byte(page)
	sum := sha256.Sum256(content)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	policy := contentSecurityPolicy(stylesheet, script)
	// The build's time would defeat caching in reproducible builds; the ETag
	// alone tells a browser whether its copy is current.
	var modtime time.Time
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", policy+websocketSources(r.Host))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// The URL names a handle and a run: keep it out of other sites' logs.
		h.Set("Referrer-Policy", "no-referrer")
		// Revalidate every time (cheap: 304 by ETag), so a new release is
		// picked up at once.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		http.ServeContent(w, r, "viewer.html", modtime, bytes.NewReader(content))
	})
}

// contentSecurityPolicy allows nothing but the page's own inline stylesheet
// and script (by hash) and connections to its own origin; websocketSources
// completes connect-src.
func contentSecurityPolicy(css, js string) string {
	return strings.Join([]string{
		"default-src 'none'",
		"script-src " + hashSource(js),
		"style-src " + hashSource(css),
		"img-src 'self' data:",
		"base-uri 'none'",
		"form-action 'self'",
		"frame-ancestors 'none'",
		"connect-src 'self'",
	}, "; ")
}

// websocketSources names the page's own host for ws: and wss: explicitly:
// browsers that predate CSP Level 3 do not count them as 'self'.
func websocketSources(host string) string {
	if !validHost(host) {
		return ""
	}
	return " ws://" + host + " wss://" + host
}

// validHost accepts host[:port] as a CSP source may carry it, so that a
// forged Host header cannot add directives.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range host {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

func hashSource(content string) string {
	sum := sha256.Sum256([]byte(content))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}
