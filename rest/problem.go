package rest

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/gharart/coderun"
)

// problem is an RFC 9457 problem document with coderun's extension members.
type problem struct {
	Type       string               `json:"type"`
	Title      string               `json:"title"`
	Status     int                  `json:"status"`
	Detail     string               `json:"detail"`
	Instance   string               `json:"instance"`
	Code       string               `json:"code"`
	RequestID  string               `json:"requestId"`
	Errors     []coderun.FieldError `json:"errors,omitempty"`
	RetryAfter int                  `json:"retryAfter,omitempty"`
}

// writeError answers r with err as problem+json. The status comes from the one
// table in the domain package; an error that is not a domain error is logged
// and shown only as an internal error.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	code := coderun.ErrorCode(err)
	if !coderun.IsPublicCode(code) {
		slog.ErrorContext(ctx, "internal error", "request_id", coderun.RequestIDFromContext(ctx), "err", err)
		code = coderun.EInternal
	}
	status := coderun.ErrorStatus(code)
	p := problem{
		Type:      "urn:coderun:problem:" + code,
		Title:     http.StatusText(status),
		Status:    status,
		Detail:    coderun.ErrorMessage(err),
		Instance:  r.URL.Path,
		Code:      code,
		RequestID: coderun.RequestIDFromContext(ctx),
	}
	var details map[string]any
	if e := coderun.AsError(err); e != nil && code != coderun.EInternal {
		p.Errors = e.Fields
		if e.RetryAfter > 0 {
			secs := int((e.RetryAfter + 999_999_999) / 1_000_000_000)
			p.RetryAfter = secs
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			if e.Quota != nil {
				quotaHeader(w.Header(), *e.Quota, secs)
			}
		}
		details = e.Details
	}
	if code == coderun.EUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="coderun"`)
	}
	if infoOf(r).route == graphQLRoute {
		writeGraphQLError(w, p, details)
		return
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(withDetails(p, details))
}

// writeGraphQLError answers a request to the GraphQL endpoint that the edge
// refuses before GraphQL sees it (401, 413, 429) as GraphQL clients expect
// errors: in `errors`, with the code and request id in `extensions`.
func writeGraphQLError(w http.ResponseWriter, p problem, details map[string]any) {
	ext := map[string]any{}
	for k, v := range details {
		ext[k] = v
	}
	ext["code"], ext["requestId"] = p.Code, p.RequestID
	if p.RetryAfter > 0 {
		ext["retryAfter"] = p.RetryAfter
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{"message": p.Detail, "extensions": ext}},
	})
}

// withDetails adds an error's extra members (e.g. activeRuns, limit) beside the
// standard ones; the standard ones win on a clash.
func withDetails(p problem, details map[string]any) any {
	if len(details) == 0 {
		return p
	}
	b, _ := json.Marshal(p)
	m := map[string]any{}
	_ = json.Unmarshal(b, &m)
	for k, v := range details {
		if _, taken := m[k]; !taken {
			m[k] = v
		}
	}
	return m
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
