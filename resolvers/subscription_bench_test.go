package resolvers_test

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	graphql "github.com/hasura/go-graphql-client"

	"github.com/gharart/coderun/resolvers"
)

// BenchmarkSubscriptions measures live output over real websockets from a
// real container: how long a chunk takes from being stored (its `at`, set
// when the worker read it from the container) to a subscriber's receipt,
// with one subscriber and with 1,000 on one chatty run; whether any chunk is
// lost; and how much the server's heap grows to serve the 1,000. Run it with
//
//	go test -run '^$' -bench Subscriptions -benchtime 1x ./resolvers
//
// The clients run in the same process, so the heap figure includes theirs.
func BenchmarkSubscriptions(b *testing.B) {
	e := newRunEnv(b, resolvers.Options{MaxSubscriptionsPerConnection: 50, MaxConnectionsPerCaller: 100})
	// A line every 10 ms for 3 s.
	const lines = 300
	chatty := fmt.Sprintf(`for i in $(seq 1 %d); do echo "line $i"; sleep 0.01; done`, lines)
	b.Run("1 subscriber", func(b *testing.B) {
		latencies, lost := follow(b, e, chatty, 1, 1)
		report(b, latencies, lost)
	})
	b.Run("1000 subscribers", func(b *testing.B) {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		peak := make(chan uint64)
		stop := make(chan struct{})
		go func() { // the heap at its largest while the run streams
			var most uint64
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					most = max(most, m.HeapInuse)
				case <-stop:
					peak <- most
					return
				}
			}
		}()
		latencies, lost := follow(b, e, chatty, 20, 50)
		close(stop)
		report(b, latencies, lost)
		b.ReportMetric(float64(int64(<-peak)-int64(before.HeapInuse))/(1<<20), "heap-MiB")
	})
}

// follow submits code and follows its output with clients×perClient
// subscribers, returning every chunk's delivery latency and how many chunks
// subscribers missed, counted against the first to complete.
func follow(b *testing.B, e *env, code string, clients, perClient int) (latencies []time.Duration, lost int) {
	var subs []*subscriber[chunk]
	var conns []*wsClient
	var runID string
	for i := range clients {
		c := e.wsClient("alice", graphql.GraphQLWS)
		conns = append(conns, c)
		if i == 0 {
			runID = e.submit(map[string]any{"code": code}).RunID
		}
		for range perClient {
			subs = append(subs, c.followOutput(runID, 0))
		}
	}
	var want int64
	for _, s := range subs {
		s.wait(b, 2*time.Minute)
		chunks := s.received()
		if len(s.errors()) > 0 {
			b.Fatalf("subscriber ended with %v", s.errors())
		}
		if len(chunks) > 0 {
			want = max(want, chunks[len(chunks)-1].Seq)
		}
		for _, c := range chunks {
			latencies = append(latencies, c.received.Sub(c.At))
		}
		lost -= len(chunks)
	}
	for _, c := range conns {
		c.close()
	}
	return latencies, lost + int(want)*len(subs)
}

func report(b *testing.B, latencies []time.Duration, lost int) {
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(latencies)), "chunks")
	b.ReportMetric(float64(lost), "lost")
}
