package rest

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/gharart/coderun"
)

// Rate is a token bucket: Burst requests at once, refilled at PerSecond.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Throttles are the per-caller token buckets of each class of route.
type Throttles struct {
	// Read is for GET routes; Write for PUT and POST; GraphQL for /graphql.
	Read, Write, GraphQL Rate
	// AuthFailure bounds failed authentications per client address, so that
	// guessing tokens is slow.
	AuthFailure Rate
}

// DefaultThrottles are generous for reads and tighter for writes. GraphQL is
// counted in cost (1 per request plus the operation's complexity): the burst
// holds two operations at the complexity limit, and the refill is a hundred
// small queries a second.
var DefaultThrottles = Throttles{
	Read:        Rate{PerSecond: 20, Burst: 100},
	Write:       Rate{PerSecond: 5, Burst: 30},
	GraphQL:     Rate{PerSecond: 300, Burst: 10000},
	AuthFailure: Rate{PerSecond: 0.5, Burst: 20},
}

// throttle holds the buckets of every caller, per class.
type throttle struct {
	rates Throttles
	now   func() time.Time

	mu      sync.Mutex
	buckets map[bucketKey]*bucket
	swept   time.Time
}

type bucketKey struct{ class, caller string }

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

func newThrottle(rates Throttles, now func() time.Time) *throttle {
	return &throttle{rates: rates, now: now, buckets: map[bucketKey]*bucket{}}
}

// verdict is the state of a caller's bucket after a request.
type verdict struct {
	class      string
	rate       Rate
	allowed    bool
	remaining  int
	retryAfter time.Duration // until the next request is allowed
	full       time.Duration // until the bucket is full again
}

// take charges one request of class to caller.
func (th *throttle) take(class, caller string, r Rate) verdict {
	return th.charge(class, caller, r, 1)
}

// check is take without the charge: the state of caller's bucket.
func (th *throttle) check(class, caller string, r Rate) verdict {
	return th.charge(class, caller, r, 0)
}

func (th *throttle) charge(class, caller string, r Rate, n int) verdict {
	now := th.now()
	th.mu.Lock()
	defer th.mu.Unlock()
	th.sweep(now)
	k := bucketKey{class, caller}
	b := th.buckets[k]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)}
		th.buckets[k] = b
	}
	b.used = now
	v := verdict{class: class, rate: r, allowed: b.lim.AllowN(now, n) && b.lim.TokensAt(now) >= float64(1-n)}
	tokens := b.lim.TokensAt(now)
	v.remaining = max(0, int(math.Floor(tokens)))
	if tokens < 1 {
		v.retryAfter = seconds((1 - tokens) / r.PerSecond)
	}
	v.full = seconds((float64(r.Burst) - tokens) / r.PerSecond)
	return v
}

// sweep forgets buckets idle long enough to be full again, now and then, so
// that the map does not grow with every caller ever seen.
func (th *throttle) sweep(now time.Time) {
	if now.Sub(th.swept) < time.Minute {
		return
	}
	th.swept = now
	for k, b := range th.buckets {
		if now.Sub(b.used) > 10*time.Minute && b.lim.TokensAt(now) >= float64(b.lim.Burst()) {
			delete(th.buckets, k)
		}
	}
}

func seconds(s float64) time.Duration { return time.Duration(math.Ceil(s*1e9)) * time.Nanosecond }

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// header writes the rate-limit headers of v: the IETF httpapi draft's
// RateLimit-Policy and RateLimit, and the X-RateLimit trio. t is when the
// next request is allowed while none is, else when the quota is whole again.
func (v verdict) header(h http.Header) {
	window := ceilSeconds(seconds(float64(v.rate.Burst) / v.rate.PerSecond))
	reset := ceilSeconds(v.full)
	if v.remaining == 0 || !v.allowed {
		reset = ceilSeconds(v.retryAfter)
	}
	h.Set("RateLimit-Policy", fmt.Sprintf("%q;q=%d;w=%d", v.class, v.rate.Burst, window))
	h.Set("RateLimit", fmt.Sprintf("%q;r=%d;t=%d", v.class, v.remaining, reset))
	h.Set("X-RateLimit-Limit", strconv.Itoa(v.rate.Burst))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(v.remaining))
	h.Set("X-RateLimit-Reset", strconv.Itoa(reset))
}

// quotaHeader puts q, which refused a request until retryAfter seconds from
// now, in the rate-limit headers in place of the route's bucket: a client
// reads the limit it ran into, and a RateLimit t equal to Retry-After.
func quotaHeader(h http.Header, q coderun.Quota, retryAfter int) {
	policy := fmt.Sprintf("%q;q=%d;w=%d", q.Policy, q.Limit, ceilSeconds(q.Window))
	if q.Window == 0 {
		policy = fmt.Sprintf("%q;q=%d;qu=\"concurrent-requests\"", q.Policy, q.Limit)
	}
	h.Set("RateLimit-Policy", policy)
	h.Set("RateLimit", fmt.Sprintf("%q;r=0;t=%d", q.Policy, retryAfter))
	h.Set("X-RateLimit-Limit", strconv.Itoa(q.Limit))
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset", strconv.Itoa(retryAfter))
}

func (v verdict) err() error {
	e := coderun.Errorf(coderun.ERateLimited, "too many %s requests; retry in %d s", v.class, ceilSeconds(v.retryAfter))
	e.RetryAfter = time.Duration(ceilSeconds(v.retryAfter)) * time.Second
	return e
}

// classOf names the bucket a request is charged to.
func (th *throttle) classOf(r *http.Request) (string, Rate) {
	switch {
	case r.URL.Path == "/graphql":
		return "graphql", th.rates.GraphQL
	case r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions:
		return "read", th.rates.Read
	}
	return "write", th.rates.Write
}

// callerOf is who a request is charged to: its user once authenticated, else
// its client address.
func callerOf(ctx context.Context, r *http.Request) string {
	if p := coderun.PrincipalFromContext(ctx); p != nil {
		return "user:" + p.UserID
	}
	return "addr:" + clientAddr(r)
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// withThrottle charges every request to its caller's bucket for its route,
// at its route class's rate (a caller polling one route does not use up
// another), answers 429 when the bucket is empty, and puts the bucket's state
// in the headers of every response. A GraphQL request is charged 1 for itself
// here, and its operation's cost through Charge once that is known.
func withThrottle(th *throttle, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		class, rt := th.classOf(r)
		caller := infoOf(r).route + " " + callerOf(r.Context(), r)
		v := th.take(class, caller, rt)
		v.header(w.Header())
		if !v.allowed {
			writeError(w, r, v.err())
			return
		}
		if class == "graphql" {
			c := &charger{th: th, class: class, route: infoOf(r).route, addr: clientAddr(r), rate: rt}
			// A websocket's operations run after the upgrade, when headers
			// can no longer be sent, and may run at once.
			if !isWebsocketUpgrade(r) {
				c.header = w.Header()
				w = refusable{ResponseWriter: w, c: c}
			}
			r = r.WithContext(context.WithValue(r.Context(), chargerKey{}, c))
		}
		next.ServeHTTP(w, r)
	})
}

// charger charges one request's caller more once the request's cost is known.
type charger struct {
	th    *throttle
	class string
	route string
	addr  string // the client's address
	rate  Rate
	// header is the response's, while it can still be sent.
	header http.Header
	// refused is set when the operation was refused for its cost.
	refused atomic.Bool
}

// caller is who an operation is charged to: its user, else its client's
// address. It is asked of each operation, not of the request: a websocket is
// opened before its caller signs in (the token comes in connection_init), and
// its operations are then charged to that user, not to an address others may
// share.
func (c *charger) caller(ctx context.Context) string {
	if p := coderun.PrincipalFromContext(ctx); p != nil {
		return c.route + " user:" + p.UserID
	}
	return c.route + " addr:" + c.addr
}

// refuse marks the request as refused over v, while its headers can be sent.
func (c *charger) refuse(v verdict) {
	if c.header != nil {
		v.header(c.header)
		c.refused.Store(true)
		c.header.Set("Retry-After", strconv.Itoa(ceilSeconds(v.retryAfter)))
	}
}

// refusable answers 429, not the 422 gqlgen gives every operation it refuses
// before running it, when the refusal was for the operation's cost: a client
// then backs off as it does for any route.
type refusable struct {
	http.ResponseWriter
	c *charger
}

func (w refusable) WriteHeader(status int) {
	if status == http.StatusUnprocessableEntity && w.c.refused.Load() {
		status = http.StatusTooManyRequests
	}
	w.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection.
func (w refusable) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type chargerKey struct{}

// Charge charges a GraphQL operation, once its cost is known, to the caller
// of the request ctx belongs to (the request itself was charged 1 up front):
// cost tokens from its graphql bucket, and, for a mutation, writes tokens from
// its bucket of writes at the write rate, as REST charges each PUT and POST,
// so that writes cost the same whichever way they come. It updates the
// request's rate-limit headers. It returns a rate_limited error, with
// RetryAfter, when either bucket holds too little; then neither is charged.
// Outside a GraphQL request it does nothing.
func Charge(ctx context.Context, cost, writes int) error {
	c, _ := ctx.Value(chargerKey{}).(*charger)
	if c == nil {
		return nil
	}
	// The writes are looked at first and taken last, so that an operation
	// refused for its cost has taken none of them.
	if writes > 0 {
		if _, err := c.take(ctx, "write", c.th.rates.Write, writes, true); err != nil {
			return err
		}
	}
	if cost > 0 {
		v, err := c.take(ctx, c.class, c.rate, cost, false)
		if err != nil {
			return err
		}
		if c.header != nil {
			v.header(c.header)
		}
	}
	if writes > 0 {
		_, err := c.take(ctx, "write", c.th.rates.Write, writes, false)
		return err
	}
	return nil
}

// take charges n tokens of class, at rate r, to the operation ctx belongs
// to; with dry, it only looks whether they are there. A refusal is put in
// the response's headers, while they can be sent.
func (c *charger) take(ctx context.Context, class string, r Rate, n int, dry bool) (verdict, error) {
	if n > r.Burst {
		return verdict{}, coderun.Errorf(coderun.ERateLimited, "a cost of %d is more than the %s quota of %d allows at once", n, class, r.Burst)
	}
	var v verdict
	if dry {
		v = c.th.check(class, c.caller(ctx), r)
		v.allowed = v.remaining >= n
	} else {
		v = c.th.charge(class, c.caller(ctx), r, n)
	}
	if v.allowed {
		return v, nil
	}
	if v.retryAfter == 0 {
		// The bucket holds a token or more, only not n of them.
		v.retryAfter = seconds((float64(n) - float64(v.remaining)) / r.PerSecond)
	}
	c.refuse(v)
	return v, v.err()
}
