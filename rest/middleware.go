package rest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gharart/coderun"
)

// withRequestID gives every request an id, in its context and in the
// X-Request-Id response header, before anything else can answer.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := "req_" + ulid.Make().String()
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(coderun.NewContextWithRequestID(r.Context(), id)))
	})
}

// withClientAddr makes r.RemoteAddr the client's address when the request
// comes through a trusted proxy: the last address of X-Forwarded-For that is
// not itself a trusted proxy (the ones before it are the client's word).
func withClientAddr(trusted []netip.Prefix, next http.Handler) http.Handler {
	if len(trusted) == 0 {
		return next
	}
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := netip.ParseAddrPort(r.RemoteAddr)
		forwarded := r.Header.Values("X-Forwarded-For")
		if err != nil || !isTrusted(peer.Addr()) || len(forwarded) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		hops := strings.Split(strings.Join(forwarded, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // garbled: keep the proxy's own address
			}
			if !isTrusted(a) {
				r2 := *r
				r2.RemoteAddr = netip.AddrPortFrom(a.Unmap(), 0).String()
				r = &r2
				break
			}
		}
		next.ServeHTTP(w, r)
	})
}

// withRecover turns a panic into a 500 problem that carries the request id.
func withRecover(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil || v == http.ErrAbortHandler {
				if v != nil {
					panic(v)
				}
				return
			}
			log.ErrorContext(r.Context(), "panic serving request",
				"request_id", coderun.RequestIDFromContext(r.Context()), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if rec, ok := w.(*recorder); !ok || !rec.wroteHeader {
				writeError(w, r, errors.New("panic"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// recorder remembers the status a handler answered with, and tells onHeader
// before any of the answer can reach the client.
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	onHeader    func(status int)
}

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.answered(status)
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) answered(status int) {
	r.status, r.wroteHeader = status, true
	if r.onHeader != nil {
		r.onHeader(status)
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack lets the websocket upgrade take over the connection.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be hijacked")
	}
	r.answered(http.StatusSwitchingProtocols)
	return h.Hijack()
}

// Flush sends buffered data to the client.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// metrics are the HTTP server's Prometheus series.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coderun_http_requests_total", Help: "HTTP requests served, by route and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coderun_http_request_duration_seconds", Help: "Time to serve an HTTP request, by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// requestInfo collects what the inner layers learn about a request (its route,
// its caller) for the access log written by the outer one.
type requestInfo struct {
	route     string
	principal *coderun.Principal
	// routed is the request the mux served, which holds the path's values.
	routed *http.Request
	trace  coderun.RequestTrace
}

// handle is the handle the request's path names, else the one the service
// noted it acted on (a GraphQL operation's), else "".
func (i *requestInfo) handle() string {
	if i.routed != nil {
		if h := i.routed.PathValue("handle"); h != "" {
			return h
		}
	}
	return i.trace.Handle()
}

type infoKey struct{}

func infoOf(r *http.Request) *requestInfo {
	if i, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
		return i
	}
	return &requestInfo{}
}

// RequestRecorder keeps the requests signed-in callers make, so that a
// support report can cite one.
type RequestRecorder interface {
	RecordRequest(coderun.RequestRecord)
}

// withAccessLog logs and counts every request once it is served, under the
// route pattern (not the raw path, which would carry ids). A signed-in
// caller's request is also handed to requests (when set) as its answer
// starts, so that it is on record before the caller can read its id; it is
// recorded with the handle the caller was authorized in, not merely one its
// path named.
func withAccessLog(log *slog.Logger, m *metrics, requests RequestRecorder, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{route: "unmatched"}
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		if requests != nil {
			rec.onHeader = func(status int) {
				if p := info.principal; p != nil {
					requests.RecordRequest(coderun.RequestRecord{
						ID: coderun.RequestIDFromContext(r.Context()), UserID: p.UserID, TokenID: p.TokenID,
						Handle: info.trace.Handle(), Method: r.Method, Route: info.route, Status: status, At: start.UTC(),
					})
				}
			}
		}
		ctx := coderun.NewContextWithTrace(context.WithValue(r.Context(), infoKey{}, info), &info.trace)
		next.ServeHTTP(rec, r.WithContext(ctx))
		elapsed := time.Since(start)
		m.requests.WithLabelValues(r.Method, info.route, strconv.Itoa(rec.status)).Inc()
		m.duration.WithLabelValues(r.Method, info.route).Observe(elapsed.Seconds())
		attrs := []any{
			"request_id", coderun.RequestIDFromContext(r.Context()),
			"method", r.Method, "route", info.route, "path", r.URL.Path,
			"status", rec.status, "duration_ms", elapsed.Milliseconds(),
		}
		if h := info.handle(); h != "" {
			attrs = append(attrs, "handle", h)
		}
		if p := info.principal; p != nil {
			attrs = append(attrs, "user", p.UserID, "token_id", p.TokenID)
		}
		log.InfoContext(r.Context(), "request", attrs...)
	})
}

// withBodyLimit bounds every request body; a larger one is refused up front
// when its length is declared, and cut off while reading otherwise.
func withBodyLimit(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			writeError(w, r, coderun.Errorf(coderun.EPayloadTooLarge, "the body is larger than %d bytes", limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// Authenticator verifies an Authorization header value.
type Authenticator interface {
	Authenticate(ctx context.Context, authorization string) (*coderun.Principal, error)
}

// withAuthentication verifies the caller of a route that is not public and
// puts the principal in the request context. A websocket upgrade may come
// without a header: its token arrives in the connection_init message instead,
// verified through GuardAuthentication under the same throttle. Failed
// authentications are throttled per client address: once a client has failed
// too often, its tokens are not even looked at until it may try again.
func withAuthentication(auth Authenticator, th *throttle, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := &authGuard{th: th, addr: "addr:" + clientAddr(r)}
		r = r.WithContext(context.WithValue(r.Context(), authGuardKey{}, g))
		header := r.Header.Get("Authorization")
		if header == "" && isWebsocketUpgrade(r) {
			next.ServeHTTP(w, r)
			return
		}
		p, err := g.authenticate(r.Context(), auth.Authenticate, header, w.Header())
		if err != nil {
			writeError(w, r, err)
			return
		}
		infoOf(r).principal = p
		next.ServeHTTP(w, r.WithContext(coderun.NewContextWithPrincipal(r.Context(), p)))
	})
}

// authGuard throttles one client address's failed authentications.
type authGuard struct {
	th   *throttle
	addr string
}

type authGuardKey struct{}

// authenticate verifies authorization with verify unless the address has
// failed too often, and counts a failure against it. The bucket's state goes
// into header when there is one to send.
func (g *authGuard) authenticate(ctx context.Context, verify func(context.Context, string) (*coderun.Principal, error), authorization string, header http.Header) (*coderun.Principal, error) {
	rate := g.th.rates.AuthFailure
	if v := g.th.check(authFailureClass, g.addr, rate); v.remaining == 0 {
		if header != nil {
			v.header(header)
		}
		return nil, v.err()
	}
	p, err := verify(ctx, authorization)
	if coderun.ErrorCode(err) == coderun.EUnauthenticated {
		if v := g.th.take(authFailureClass, g.addr, rate); header != nil {
			v.header(header)
		}
	}
	return p, err
}

// GuardAuthentication wraps verify so that, within a request the edge serves
// (a websocket whose token comes in connection_init), failures are throttled
// per client address as for the Authorization header: an address that failed
// too often is refused with rate_limited before its token is looked at.
func GuardAuthentication(verify func(context.Context, string) (*coderun.Principal, error)) func(context.Context, string) (*coderun.Principal, error) {
	return func(ctx context.Context, authorization string) (*coderun.Principal, error) {
		g, _ := ctx.Value(authGuardKey{}).(*authGuard)
		if g == nil {
			return verify(ctx, authorization)
		}
		return g.authenticate(ctx, verify, authorization, nil)
	}
}

// authFailureClass names the bucket of failed authentications.
const authFailureClass = "auth-failure"

func isWebsocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}
