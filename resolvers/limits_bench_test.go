package resolvers_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gharart/coderun/resolvers"
)

// BenchmarkShapeLimits measures what the worst operations the shape limits
// let through, or refuse, cost the server, as a ratio to a small ordinary
// query timed in the same run. Each operation sent differs by a comment, so
// none is answered from the parsed-query cache. Run it with
//
//	go test -run '^$' -bench ShapeLimits ./resolvers
func BenchmarkShapeLimits(b *testing.B) {
	e := newEnv(b, resolvers.Options{})
	ordinary := `{ handle(handle: "acme") { id handle } }`
	cases := []struct{ name, query string }{
		// gqlparser checks that fields of one name merge pair by pair: n²
		// steps for n repeats, with n as large as the token limit allows.
		{"longest repeat of one field", `{ handle(handle: "acme") { ` + fields(resolvers.DefaultTokenLimit-10, func(int) string { return "id" }) + `} }`},
		// 2^60 fields once expanded; refused by counting, not expanding.
		{"fragment bomb refused", fragmentBomb(60)},
	}
	base := timePerOp(b, e, ordinary)
	b.Logf("ordinary query: %v", base)
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			start, n := time.Now(), 0
			for b.Loop() {
				n++
				if r := e.do("alice", uncached(c.query, n), nil); r.status != http.StatusOK && r.status != http.StatusUnprocessableEntity {
					b.Fatalf("status %d", r.status)
				}
			}
			b.ReportMetric(float64(time.Since(start))/float64(n)/float64(base), "x-ordinary")
		})
	}
}

// timePerOp is the mean time of 50 answers to query.
func timePerOp(b *testing.B, e *env, query string) time.Duration {
	const n = 50
	start := time.Now()
	for i := range n {
		e.do("alice", uncached(query, -i), nil)
	}
	return time.Since(start) / n
}

// uncached is query with a comment naming i.
func uncached(query string, i int) string {
	return query + "\n# " + strconv.Itoa(i)
}
