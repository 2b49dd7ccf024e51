// Package rest is coderun's HTTP edge: the documented /v2 REST routes (thin
// adapters over service/), the cross-cutting behaviour every response shares
// (request ids, problem+json errors, authentication, body limits, panics
// recovered, access logs and metrics), the health and readiness probes, the
// OpenAPI document, and the mount points of the GraphQL endpoint and the live
// viewer page.
package rest

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/service"
)

// Options configure the HTTP edge.
type Options struct {
	Service       *service.Service
	Authenticator Authenticator
	// GraphQL serves POST and websocket GET /graphql.
	GraphQL http.Handler
	// Viewer serves GET /viewer, the live viewer page (public: the page itself
	// asks for a token).
	Viewer http.Handler
	// Checks must all pass for /readyz to answer 200.
	Checks []Check
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	Logger       *slog.Logger
	// Metrics registers the server's series and serves /metrics (default: a new registry).
	Metrics *prometheus.Registry
	// Throttles are the per-caller rate limits (default DefaultThrottles).
	Throttles *Throttles
	// Now is the clock of the throttles (default time.Now).
	Now func() time.Time
	// TrustedProxies are the load balancers in front of the service: a
	// request from one of them is taken to come from the client its
	// X-Forwarded-For names, for throttles and connection limits. Without
	// them X-Forwarded-For is ignored, so that no client can pick its address.
	TrustedProxies []netip.Prefix
}

// Check is one dependency /readyz looks at.
type Check struct {
	Name string
	Ping func(context.Context) error
}

// graphQLRoute is the GraphQL endpoint's pattern: POST, and GET for websockets.
const graphQLRoute = "/graphql"

// DefaultMaxBodyBytes bounds request bodies when Options leave it unset.
const DefaultMaxBodyBytes = 1 << 20

type server struct {
	svc *service.Service
	log *slog.Logger
}

// route is one entry of the routing table; public routes need no token.
type route struct {
	pattern string
	handler http.HandlerFunc
	public  bool
}

// New returns the service's whole HTTP handler.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Metrics == nil {
		opts.Metrics = prometheus.NewRegistry()
	}
	if opts.Throttles == nil {
		opts.Throttles = &DefaultThrottles
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &server{svc: opts.Service, log: opts.Logger}
	routes := s.routes()
	routes = append(routes,
		route{pattern: "GET /healthz", handler: healthz, public: true},
		route{pattern: "GET /readyz", handler: readyz(opts.Logger, opts.Checks), public: true},
		route{pattern: "GET /metrics", handler: promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{}).ServeHTTP, public: true},
	)
	if opts.GraphQL != nil {
		routes = append(routes, route{pattern: graphQLRoute, handler: opts.GraphQL.ServeHTTP})
	}
	if opts.Viewer != nil {
		routes = append(routes, route{pattern: "GET /viewer", handler: opts.Viewer.ServeHTTP, public: true})
	}

	// Each route authenticates (unless public) and throttles its caller
	// itself, inside the mux, so that every answer, a 401 or 429 too, is
	// logged under its route and handle.
	th := newThrottle(*opts.Throttles, opts.Now)
	mux := http.NewServeMux()
	for _, rt := range routes {
		var h http.Handler = withThrottle(th, withBodyLimit(opts.MaxBodyBytes, rt.handler))
		if !rt.public {
			h = withAuthentication(opts.Authenticator, th, h)
		}
		mux.Handle(rt.pattern, h)
	}
	var h http.Handler = routed(mux, withThrottle(th, http.HandlerFunc(unrouted(mux))))
	h = withRecover(opts.Logger, h)
	var requests RequestRecorder
	if opts.Service != nil {
		requests = opts.Service
	}
	h = withAccessLog(opts.Logger, newMetrics(opts.Metrics), requests, h)
	h = withClientAddr(opts.TrustedProxies, h)
	return withRequestID(h)
}

// routed serves r through mux, and through none the requests no route takes
// (404, 405) and those whose path is not canonical (the mux would redirect
// them itself, without the route's authentication and throttle).
func routed(mux *http.ServeMux, none http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		if pattern == "" || !canonical(r.URL.Path) {
			none.ServeHTTP(w, r)
			return
		}
		info := infoOf(r)
		info.route, info.routed = pattern, r
		mux.ServeHTTP(w, r) // sets r's path values, which the log reads
	})
}

// unrouted answers the requests no route of mux takes with problem documents
// instead of the mux's plain text, learning from the mux's own answer whether
// the path is unknown or not canonical (404) or the method is wrong (405,
// with the Allow header it computed).
func unrouted(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h, _ := mux.Handler(r)
		probe := &headerProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if loc := probe.header.Get("Location"); probe.status >= 300 && probe.status < 400 && loc != "" {
			// The mux would redirect to the canonical path; an API client
			// is better told, and a POST's body is not sent on silently.
			writeError(w, r, coderun.Errorf(coderun.ENotFound, "no route %s %s; the path is not canonical: did you mean %s?", r.Method, r.URL.Path, loc))
			return
		}
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			writeError(w, r, coderun.Errorf(coderun.EMethodNotAllowed, "%s is not allowed on %s; allowed: %s",
				r.Method, r.URL.Path, probe.header.Get("Allow")))
			return
		}
		writeError(w, r, coderun.Errorf(coderun.ENotFound, "no route %s %s", r.Method, r.URL.Path))
	}
}

// canonical reports whether p is a clean path, one the mux routes without
// redirecting: no "." or ".." segments, no doubled slashes.
func canonical(p string) bool {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// headerProbe is a ResponseWriter that keeps only the status and headers.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(status int)      { p.status = status }

func healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func readyz(log *slog.Logger, checks []Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		results := map[string]string{}
		var failed []string
		for _, c := range checks {
			if err := c.Ping(r.Context()); err != nil {
				// The probe is public: the reason goes to the log, not the caller.
				log.WarnContext(r.Context(), "readiness check failed", "check", c.Name, "err", err)
				results[c.Name] = "unreachable"
				failed = append(failed, c.Name)
				continue
			}
			results[c.Name] = "ok"
		}
		if len(failed) > 0 {
			e := coderun.Errorf(coderun.EUnavailable, "not ready: %s unreachable", strings.Join(failed, ", "))
			e.Details = map[string]any{"checks": results}
			writeError(w, r, e)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": results})
	}
}
